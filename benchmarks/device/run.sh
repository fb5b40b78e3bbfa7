#!/usr/bin/env bash
# Run on the lent GPU box from the repo root, carrying `.whl` and `.minilm16` (made by prepare.sh).
# Each argument is one run: train_step.py's options (the training-step benchmark, the DeepSpeed engine
# against a bare loop, without its Ray variant), or "stage1_quality.py" and its options (a preset's per-task
# quality after some minutes of stage 1). Default: "--config flux-width" and "--config small", each with its
# config's ZeRO stage, compile setting and batch.
#   bash benchmarks/device/run.sh "--config flux-width" "--config flux-width --no-compile --zero 2 --batch 8"
#   bash benchmarks/device/run.sh "--config flux-width --profile $OUT"   # where the step's time goes
#   bash benchmarks/device/run.sh "stage1_quality.py --preset small --minutes 7 --data /tmp/pairs"
# Logs go to $OUT, run-1.log for the first argument and so on, as each finishes; each ends with its JSON line.
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
for run in "${configs[@]}"; do
  index=$((index + 1))
  read -r -a words <<< "$run"
  script=benchmarks/train_step.py
  if [[ "${words[0]:-}" == *.py ]]; then
    script=benchmarks/${words[0]#benchmarks/}; words=("${words[@]:1}")
  fi
  [[ "$script" == benchmarks/train_step.py ]] && words+=(--no-ray)   # the box has no Ray
  python3 "$script" "${words[@]}" --set "model.text_encoder_path=$PWD/.minilm16" \
    2>&1 | tee "$out/run-$index.log" || status=1
done
exit $status

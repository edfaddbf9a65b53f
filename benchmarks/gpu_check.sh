#!/usr/bin/env bash
# One-call GPU check for a lent machine (see benchmarks/gpu_check.py for what it measures):
#   bash benchmarks/gpu_check.sh "$OUT/gpu_check.json"             # GPU: < 8 min on one H200
#   bash benchmarks/gpu_check.sh /tmp/gpu_check.json --cpu-smoke   # CPU, tiny sizes, seconds
# Needs only python3 with torch + transformers; fairweather is taken from this checkout (not pip-installed), and
# nothing is downloaded (Hugging Face offline). PYTHON picks another interpreter; GPU_CHECK_TIMEOUT_S (default 470)
# bounds the whole run: the JSON is rewritten after every section, so a killed run still leaves what finished.
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT.json [--cpu-smoke] [--sections env,vlm,loss,throughput,tiled,ddp] [--archs msbdn,...]" >&2
  exit 2
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo/platform${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
exec timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-470}" "${PYTHON:-python3}" "$repo/benchmarks/gpu_check.py" "$@"

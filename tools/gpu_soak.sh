#!/usr/bin/env bash
# On the GPU box: the real server with full-size random big-lama weights, timed from start to
# /readyz, the first request after /readyz against the steady ones, then the resource report
# (python -m loadreport) with 20 simultaneous 2560×1920 requests. Results under $1.
# With a second argument `startup-only`: start-up and first requests, no report; with `bursts`:
# then three short reports in a row, each ending in 20 simultaneous 2560×1920 requests, with
# NVML's memory used after each (does memory plateau after the first burst, or keep growing?);
# with `load`: then the load benchmark (python -m loadreport load; extra arguments go to it),
# its table in $1/load.md and everything in $1/load.json.
set -uo pipefail
out=${1:?output folder}
only=${2:-}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$out" models
python3 - <<'PY'
from pathlib import Path
import torch
from lama.checkpoint import LoadedCheckpoint, save_safetensors
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator
torch.manual_seed(0)
weights = FFCResNetGenerator(BIG_LAMA_CONFIG).eval().state_dict()
save_safetensors(LoadedCheckpoint(weights, BIG_LAMA_CONFIG, "random", Path("random"), torch.float32),
                 "models/big-lama.safetensors")
PY
started=$(date +%s%N)
python3 app.py --port 7860 --model models/big-lama.safetensors --logs-dir "$out/logs" \
    --outputs-dir /tmp/outputs >"$out/app.log" 2>&1 &
server=$!
ready() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:7860/readyz', timeout=2)" 2>/dev/null; }
until ready; do
    kill -0 $server 2>/dev/null || { echo "server died"; tail -30 "$out/app.log"; exit 1; }
    sleep 0.2
done
echo "start to /readyz: $(( ($(date +%s%N) - started) / 1000000 )) ms" | tee "$out/startup.txt"
python3 tools/first_request.py http://127.0.0.1:7860 | tee -a "$out/startup.txt"
if [ "$only" = startup-only ]; then kill -TERM $server; wait $server; exit 0; fi
if [ "$only" = load ]; then
    python3 -m loadreport load --url http://127.0.0.1:7860 --json "$out/load.json" "$@" | tee "$out/load.md"
    kill -TERM $server; wait $server; exit 0
fi
if [ "$only" = bursts ]; then
    echo "after the first requests: NVML memory used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)" \
        | tee "$out/bursts.txt"
    for i in 1 2 3; do
        python3 -m loadreport --url http://127.0.0.1:7860 --simultaneous 20 --out "$out/bursts/$i" \
            --stream-count 20 --stream-interval 0.2 --runs 3 >/dev/null 2>&1
        echo "after report $i: NVML memory used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)," \
            "$(grep -o '[0-9]*/20 repaired' "$out/bursts/$i/report.md")" | tee -a "$out/bursts.txt"
    done
    kill -TERM $server; wait $server; exit 0
fi
python3 -m loadreport --url http://127.0.0.1:7860 --simultaneous 20 --out "$out/report" \
    --stream-count 100 --stream-interval 0.3 --runs 10 2>&1 | tail -5
python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:7860/healthz').read().decode())" \
    >"$out/healthz.json"
kill -TERM $server; wait $server

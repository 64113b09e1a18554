#!/usr/bin/env bash
# GPU check (issue 7): run whenever a CUDA machine is available; fits a 7-minute budget.
#
# Installs nothing. Runs, each under its own timeout (a step that times out or fails is
# reported and the next one runs):
#   1. the CUDA environment probe                                     (20 s)
#   2. pytest -m gpu (the test modules that hold GPU tests)           (90 s)
#   3. tools/benchmark.py on CUDA: fp32, channels_last, bf16 (train and inference rows),
#      peak training memory, compile (train rows)   (45 + 40 + 40 + 60 + 150 s)
# then prints one table (train-step and inference ratios ours/plain for each config) and
# leaves the JSON files and logs in $OUT (default: /tmp/gpu_check).
#
# Usage (repository root):  bash tools/gpu_check.sh
# Environment:
#   PY        python to use (default: .venv/bin/python, else python3)
#   OUT       output folder (default: /tmp/gpu_check)
#   NETS      nets for the benchmark (default: lenet,caffenet,googlenet,resnet50)
#   COMPILE_NETS  nets for the torch.compile row (default: lenet,caffenet; compiling is slow)
#   MEM_NETS  nets for the peak-memory row (default: lenet,resnet50; one process per measurement)
#   DEVICE    cuda (default); DEVICE=cpu runs the same steps on the CPU (to check the script)
#   SCALE     multiply every timeout by this integer (default 1)
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-/tmp/gpu_check}
NETS=${NETS:-lenet,caffenet,googlenet,resnet50}
COMPILE_NETS=${COMPILE_NETS:-lenet,caffenet}
MEM_NETS=${MEM_NETS:-lenet,resnet50}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-1}
mkdir -p "$OUT"
STATUS="$OUT/status.txt"
: > "$STATUS"
START=$(date +%s)

step() {  # step NAME SECONDS CMD...
    local name=$1 secs=$(( $2 * SCALE )); shift 2
    local t0=$(date +%s)
    echo "== $name (timeout ${secs}s): $*"
    timeout --kill-after=10 "$secs" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local took=$(( $(date +%s) - t0 ))
    local what=ok
    [ $rc -ne 0 ] && what="FAILED rc=$rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMEOUT"
    [ $rc -eq 5 ] && [ "$name" = pytest_gpu ] && what="no tests collected"
    echo "$name $what ${took}s" | tee -a "$STATUS"
    local lines=3
    [ $rc -ne 0 ] && lines=30
    tail -n $lines "$OUT/$name.log" | sed 's/^/   | /'
}

step env 20 "$PY" -c "
import torch, sys
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if '$DEVICE' == 'cuda':
    if not torch.cuda.is_available(): sys.exit('no CUDA device')
    print('gpu', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())
"
if [ "$DEVICE" = cuda ]; then
    # only the modules that hold GPU tests: collecting the rest needs test-only packages
    mapfile -t GPU_FILES < <(grep -rl "mark.gpu" tests | sort)
    step pytest_gpu 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rfE "${GPU_FILES[@]}"
else
    step pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_benchmark_tool.py
fi
BENCH=("$PY" tools/benchmark.py --device "$DEVICE" --nets "$NETS" --repeats 5 --min-ms 300 --warmup 2 --no-opencv)
step bench_fp32 45 "${BENCH[@]}" --no-mem --json "$OUT/fp32.json"
step bench_channels_last 40 "${BENCH[@]}" --no-mem --channels-last --json "$OUT/channels_last.json"
step bench_bf16 40 "${BENCH[@]}" --no-mem --precision bf16 --json "$OUT/bf16.json"
step bench_memory 60 "${BENCH[@]}" --nets "$MEM_NETS" --mem-only --no-infer --json "$OUT/memory.json"
step bench_compile 150 "${BENCH[@]}" --nets "$COMPILE_NETS" --no-mem --no-infer --compile --repeats 3 \
    --json "$OUT/compile.json"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
configs = ["fp32", "channels_last", "bf16", "compile"]
res = {c: json.loads((out / f"{c}.json").read_text()) for c in configs if (out / f"{c}.json").exists()}
meta = next(iter(res.values()))["meta"] if res else {}
print(f"\nGPU check: {meta.get('gpu', meta.get('device', '?'))}, torch {meta.get('torch', '?')}")
print(f"{'net':<10} {'phase':<11} {'ours':<10} " + " ".join(f"{c:>22}" for c in configs))
print(f"{'':<10} {'':<11} {'':<10} " + " ".join(f"{'ours ms / ratio':>22}" for _ in configs))
keys = []
for c in res.values():
    for r in c["rows"]:
        k = (r["net"], r["phase"], r["ours"])
        if r["baseline"] == "plain" and k not in keys:
            keys.append(k)
for k in keys:
    cells = []
    for c in configs:
        row = [r for r in res.get(c, {}).get("rows", [])
               if (r["net"], r["phase"], r["ours"]) == k and r["baseline"] == "plain"]
        cells.append(f"{row[0]['ours_ms']:10.2f} / {row[0]['ratio']:5.3f}  " if row else f"{'-':>22}")
    print(f"{k[0]:<10} {k[1]:<11} {k[2]:<10} " + " ".join(f"{x:>22}" for x in cells))
mf = out / "memory.json"
if mf.exists():
    m = json.loads(mf.read_text())
    how = ("torch.cuda.max_memory_allocated" if m["meta"]["device"].startswith("cuda")
           else "VmHWM - VmRSS after imports")
    print(f"\npeak training memory, fp32 ({how}, MiB): " + ", ".join(
        f"{r['net']} {r['impl']} {r['peak_mib']:.0f}" for r in m["memory"] if r["peak_mib"] is not None))
EOF
echo
cat "$STATUS"
echo "total $(( $(date +%s) - START ))s; logs and JSON in $OUT"

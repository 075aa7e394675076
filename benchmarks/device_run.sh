#!/usr/bin/env bash
# One run on a lent GPU machine, about 8 minutes (docs/gpu.md, "A lent GPU machine"):
#
#   benchmarks/device_run.sh OUT                  on the GPU machine, OUT = the run's $OUT
#   benchmarks/device_run.sh --cpu-rehearsal OUT  the same steps here, the CUDA ones skipped
#
# Needs .device/ (python tools/device_bundle.py) beside the repository and a Python 3.12 with
# torch (the GPU image's; here DEVICE_PYTHON=/path/to/python3.12 with torch installed). Every
# step has a time limit taken from what is left of DEVICE_BUDGET_S (480 s), so the results in
# OUT (at most 8 files, each under 16 MiB) come back even when a step runs long:
#   device_run.log        everything printed, with each step's start and time left
#   gpu.txt               nvidia-smi and what torch sees
#   pytest_cuda.log       pytest -m cuda
#   bench_results.json    the GPU benchmarks' results (bench_gpu_latency, bench_input_pipeline,
#                         bench_gpu_packing, bench_framework_overhead --device cuda), per name
#   device_trials.json    per trial: what Ray granted, peak GPU memory, images/s; and in total
#   experiment.tar.gz     the sweep's rows, round index and metrics (no weights)
set -uo pipefail

REHEARSAL=0
if [ "${1:-}" = "--cpu-rehearsal" ]; then REHEARSAL=1; shift; fi
OUT=${1:?usage: benchmarks/device_run.sh [--cpu-rehearsal] OUT}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUDGET_S=${DEVICE_BUDGET_S:-480}
PY=${DEVICE_PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/device_run.log") 2>&1

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
step() { echo; echo "== $(date -u +%H:%M:%S) UTC, $(left) s left: $*"; }
limit() { local want=$1 reserve=$2 have; have=$(( $(left) - reserve ));
          [ "$have" -lt "$want" ] && want=$have; [ "$want" -lt 10 ] && want=10; echo "$want"; }

step "install the bundle (.device/wheels) with $PY"
if [ ! -d "$REPO/.device/wheels" ]; then
    echo "no .device/wheels: build it with python tools/device_bundle.py"; exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "$PY is not Python 3.12 (the bundle's wheels are cp312): set DEVICE_PYTHON"; exit 2
fi
SITE=${TMPDIR:-/tmp}/prunetune-device-site
rm -rf "$SITE"
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$REPO"/.device/wheels/*.whl \
    || { echo "the bundle did not install"; exit 2; }
export PYTHONPATH="$SITE:$REPO"
export RAY_DISABLE_USAGE_STATS=1 PYTHONUNBUFFERED=1
cd "$REPO"
"$PY" -c 'import ray, torch, pydantic, torch_pruning; print(f"ray {ray.__version__}, torch {torch.__version__}, pydantic {pydantic.VERSION}")'

step "the GPU"
{
    command -v nvidia-smi > /dev/null && nvidia-smi || echo "no nvidia-smi"
    "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available());
[print(i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i), round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1), "GiB") for i in range(torch.cuda.device_count())]'
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$REHEARSAL" = 0 ] && [ "$CUDA" != 1 ]; then echo "torch sees no GPU here: stopping"; exit 1; fi

step "pytest -m cuda"
if [ "$CUDA" = 1 ]; then
    # Only the modules with CUDA tests: the others may import extras the GPU image lacks.
    timeout "$(limit 45 400)" "$PY" -m pytest -m cuda -q -ra -p no:cacheprovider \
        $(grep -l "mark.cuda" tests/*.py) > "$OUT/pytest_cuda.log" 2>&1
    echo "pytest exit $?"; tail -5 "$OUT/pytest_cuda.log"
else
    echo "skipped: no CUDA here (rehearsal)" | tee "$OUT/pytest_cuda.log"
fi

step "a Ray Tune sweep, 4 trials per GPU (benchmarks/device_sweep.yaml)"
WORK=${TMPDIR:-/tmp}/prunetune-device-out
rm -rf "$WORK"
SWEEP_S=$(limit 170 230)  # what the benchmarks after it need is kept back
if [ "$CUDA" = 1 ]; then
    # About 6 s of the sweep's time per epoch (12 trials, 4 at a time, IMP 3 phases), after
    # about 40 s of start-up.
    EPOCHS=$(( (SWEEP_S - 40) / 6 )); [ "$EPOCHS" -gt 30 ] && EPOCHS=30; [ "$EPOCHS" -lt 2 ] && EPOCHS=2
    SETTINGS=(--set "train.epochs=$EPOCHS")
else
    echo "rehearsal: --smoke, a narrow model, on the CPU (resources.gpu: 0)"
    SETTINGS=(--smoke --set model.width=8 --set resources.gpu=0 --set resources.cpu=1)
fi
timeout "$SWEEP_S" "$PY" sweeps/run_sweep.py benchmarks/device_sweep.yaml \
    --storage "$WORK" --name device_flowers --set "data.root=$REPO/.device/data" "${SETTINGS[@]}"
echo "run_sweep exit $?"

# Each benchmark's JSON line goes into bench_results.json as soon as it ends, so a step that
# runs out of time loses only its own figures. The CPU-only parts are cut to their minimum.
export PRUNETUNE_FLOWERS_ROOT="$REPO/.device/data" PRUNETUNE_BENCH_CACHE=${TMPDIR:-/tmp}/prunetune-bench-cache
BENCH_DIR=${TMPDIR:-/tmp}/prunetune-device-bench
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
echo '{}' > "$OUT/bench_results.json"
bench() {  # bench NAME SECONDS RESERVE [ARGS...]: run benchmarks/NAME.py, keep its JSON line
    local name=$1 want=$2 reserve=$3 code; shift 3
    step "benchmark $name $*"
    timeout "$(limit "$want" "$reserve")" "$PY" "benchmarks/$name.py" "$@" > "$BENCH_DIR/$name.json"
    code=$?; echo "$name exit $code"
    "$PY" - "$OUT/bench_results.json" "$BENCH_DIR/$name.json" "$name" "$code" <<'PYTHON'
import json, sys
from pathlib import Path
results, out, name, code = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
lines = out.read_text().strip().splitlines()
merged = json.loads(results.read_text())
try:
    merged[name] = json.loads(lines[-1]) if code == 0 else {"error": f"exit {code}"}
except (IndexError, json.JSONDecodeError) as error:
    merged[name] = {"error": f"no JSON line: {error}"}
results.write_text(json.dumps(merged, indent=1) + "\n")
PYTHON
}
if [ "$CUDA" = 1 ]; then
    bench bench_gpu_latency 50 180 --rounds 3
    bench bench_input_pipeline 55 125 --sizes 112 --reps 1 --steps 1
    bench bench_gpu_packing 80 45 --epochs 12
    bench bench_framework_overhead 45 5 --device cuda --reps 2 --epochs 4 --width 64
else
    echo "rehearsal: the same benchmarks' --quick modes on the CPU (their GPU figures pending)"
    bench bench_gpu_latency 50 180 --quick
    bench bench_input_pipeline 55 125 --quick
    bench bench_gpu_packing 80 45 --quick
    bench bench_framework_overhead 45 5 --quick
fi

step "what each trial was granted and how fast it ran"
"$PY" benchmarks/device_report.py "$WORK/device_flowers" "$OUT/device_trials.json"
tar -czf "$OUT/experiment.tar.gz" -C "$WORK" --exclude='state.pt' --exclude='*.safetensors' --exclude='*.pkl' \
    --exclude='dense_cache' device_flowers 2> /dev/null
ls -la "$OUT"
step "done"

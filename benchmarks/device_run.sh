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
#   bench_results.json    benchmarks/run_all.py's results for the GPU rows
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
    timeout "$(limit 120 300)" "$PY" -m pytest -m cuda -q -ra -p no:cacheprovider \
        $(grep -l "mark.cuda" tests/*.py) > "$OUT/pytest_cuda.log" 2>&1
    echo "pytest exit $?"; tail -5 "$OUT/pytest_cuda.log"
else
    echo "skipped: no CUDA here (rehearsal)" | tee "$OUT/pytest_cuda.log"
fi

step "benchmarks: input pipeline, GPU packing, framework overhead, latency (dense, channels, 2:4)"
GPU_BENCHES="bench_input_pipeline bench_gpu_packing bench_framework_overhead bench_latency"
if [ "$CUDA" = 1 ]; then
    timeout "$(limit 200 210)" "$PY" benchmarks/run_all.py --only $GPU_BENCHES
    echo "run_all exit $?"
    cp benchmarks/results.json "$OUT/bench_results.json"
else
    echo "rehearsal: their --quick modes (a smoke run, results not written); the GPU rows are skipped"
    timeout "$(limit 200 210)" "$PY" benchmarks/run_all.py --quick --only $GPU_BENCHES
    echo "run_all exit $?"
    echo '{"rehearsal": "no CUDA: --quick modes only"}' > "$OUT/bench_results.json"
fi

step "a Ray Tune sweep, 4 trials per GPU (benchmarks/device_sweep.yaml)"
WORK=${TMPDIR:-/tmp}/prunetune-device-out
rm -rf "$WORK"
if [ "$CUDA" = 1 ]; then
    # About 8 s of the budget per epoch of training (12 trials, 4 at a time, IMP 3 phases).
    EPOCHS=$(( ($(left) - 90) / 8 )); [ "$EPOCHS" -gt 30 ] && EPOCHS=30; [ "$EPOCHS" -lt 2 ] && EPOCHS=2
    SETTINGS=(--set "train.epochs=$EPOCHS")
else
    echo "rehearsal: --smoke, a narrow model, on the CPU (resources.gpu: 0)"
    SETTINGS=(--smoke --set model.width=8 --set resources.gpu=0 --set resources.cpu=1)
fi
timeout "$(limit 400 40)" "$PY" sweeps/run_sweep.py benchmarks/device_sweep.yaml \
    --storage "$WORK" --name device_flowers --set "data.root=$REPO/.device/data" "${SETTINGS[@]}"
echo "run_sweep exit $?"

step "what each trial was granted and how fast it ran"
"$PY" benchmarks/device_report.py "$WORK/device_flowers" "$OUT/device_trials.json"
tar -czf "$OUT/experiment.tar.gz" -C "$WORK" --exclude='state.pt' --exclude='*.pkl' \
    --exclude='dense_cache' device_flowers 2> /dev/null
ls -la "$OUT"
step "done"

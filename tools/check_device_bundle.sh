#!/usr/bin/env bash
# Does .device/ install and run the way the GPU machine will use it? On this machine, in a
# Python 3.12 that has torch (the GPU image has torch 2.11 and no network):
#
#   tools/check_device_bundle.sh /path/to/python3.12
#
# 1. pip install --no-index --no-deps --target DIR .device/wheels/*.whl (DIR: a temporary one)
# 2. import ray; ray.init(); tune.run of a trivial function
# 3. prunetune's quickstart --smoke from the installed target directory
# Not part of the test suite (it needs a 3.12 with torch and the bundle, which CI has neither
# of); run it after tools/device_bundle.py. Exit 0 when all three work.
set -euo pipefail
PY=${1:?usage: tools/check_device_bundle.sh /path/to/python3.12}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d)
SITE=$OUT/site
trap 'rm -rf "$OUT"' EXIT

"$PY" -c 'import sys, torch; assert sys.version_info[:2] == (3, 12), sys.version; print("python", sys.version.split()[0], "torch", torch.__version__)'
rm -rf "$SITE"
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$REPO"/.device/wheels/*.whl
echo "check_device_bundle: installed $(ls "$REPO"/.device/wheels | wc -l) wheels into $SITE"
export PYTHONPATH="$SITE:$REPO" RAY_DISABLE_USAGE_STATS=1
cd "$OUT"
"$PY" - <<'EOF'
import ray
from ray import tune

ray.init(num_cpus=1, include_dashboard=False)
analysis = tune.run(lambda config: tune.report({"square": config["x"] ** 2}),
                    config={"x": tune.grid_search([2, 3])}, verbose=0, storage_path=__import__("os").getcwd() + "/tune")
squares = sorted(t.last_result["square"] for t in analysis.trials)
assert squares == [4, 9], squares
print(f"check_device_bundle: ray {ray.__version__} from {ray.__file__}: tune.run gave {squares}")
ray.shutdown()
EOF
"$PY" "$REPO/sweeps/run_sweep.py" quickstart --smoke --set model.width=4 --storage "$OUT/out" \
    | tail -3
"$PY" -c "import json, pathlib; trials = list(pathlib.Path('$OUT/out/quickstart-smoke').glob('*/rounds.json')); print(f'check_device_bundle: quickstart --smoke finished {len(trials)} trials'); assert len(trials) == 24"

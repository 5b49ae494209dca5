#!/usr/bin/env bash
# The device checks of deqfl on a CUDA machine, in under 8 minutes (issue 15, item 1).
#
#   scripts/gpu_check.sh fetch   # where pip reaches PyPI: the wheels the GPU machine lacks, into .whl/
#   scripts/gpu_check.sh         # on the GPU machine, from the repository root's copy
#
# The GPU machine has Python 3.12 and a CUDA build of torch but no network; the packages
# deqfl needs beyond its image travel as wheels in .whl/ (ignored by git) and are installed
# into a private folder put on PYTHONPATH, never over the image's own packages. The run:
#   1. the environment: nvidia-smi, torch, CUDA;
#   2. the device tests (`pytest -m gpu`: tests/experiments/test_devices.py on
#      experiment.device=cuda: repeatability, workers, resume on the CPU, names);
#   3. a short CUDA benchmark, `deqfl bench engine` on digits with experiment.device=cuda,
#      and the same on the CPU for comparison.
# Results go to $OUT (default ./gpu-check): env.txt, gpu-tests.log/.xml, bench-*.json/.log.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=.whl
# What the GPU machine's image lacks (docs: /work/.library/device/KINDS.md's package list),
# pinned to the versions deqfl is tested with.
NEEDED=(
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0 tomli-w==1.2.0 opacus==1.6.0 flwr-datasets==0.6.1 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
)

if [ "${1:-}" = fetch ]; then
    mkdir -p "$WHEELS"
    exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "${NEEDED[@]}"
fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [fetch]" >&2
    exit 2
fi

OUT=${OUT:-$PWD/gpu-check}
mkdir -p "$OUT"
export FLWR_TELEMETRY_ENABLED=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export DEQFL_CACHE_DIR=${DEQFL_CACHE_DIR:-/tmp/deqfl-cache}
SITE=/tmp/deqfl-site
started=$SECONDS

# 1. what is missing, from the wheels
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "installing the wheels in $WHEELS failed" >&2; exit 1; }
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' || { echo "deqfl's packages are missing: run '$0 fetch' where pip reaches PyPI and carry .whl/" >&2; exit 1; }
import importlib
missing = [m for m in ("torch", "numpy", "pydantic", "tomli_w", "opacus", "flwr_datasets", "datasets", "sklearn",
                       "safetensors", "rich", "matplotlib", "pytest") if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"missing: {', '.join(missing)}")
import deqfl.experiments.runner  # noqa: F401
EOF

# 2. the environment
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count()); print("device 0:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
    nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device: nothing to check here")' || exit 1

# 3. the device tests on CUDA
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/experiments/test_devices.py \
    --junitxml "$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

# 4. a short benchmark: the same small experiment on CUDA and on the CPU (at most 20 + 240 +
#    120 + 90 s in all with the steps above)
bench() {  # bench NAME DEVICE SECONDS
    timeout "$3" "$PY" -m deqfl.cli.main bench engine --figures rounds,workers --rounds 2 \
        --set data.dataset=digits --set data.num_clients=10 --set experiment.rounds=3 \
        --set "experiment.device=$2" --out "$OUT/bench-$1.json" > "$OUT/bench-$1.log" 2>&1
    echo "bench $1: exit $? ($(tail -n 1 "$OUT/bench-$1.log"))"
}
bench engine-cuda cuda 120
bench engine-cpu cpu 90

echo "gpu_check: tests exit $tests_rc, $((SECONDS - started)) s in all; results in $OUT"
exit "$tests_rc"

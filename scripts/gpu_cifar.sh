#!/usr/bin/env bash
# A GPU-sized slice of the CIFAR-10 protocol in under 9 minutes (issue 16, item 4;
# docs/CIFAR_PROTOCOL.md, "GPU").
#
#   scripts/gpu_cifar.sh fetch   # where pip reaches PyPI: the wheels the GPU machine lacks (gpu_check.sh fetch)
#   scripts/gpu_cifar.sh         # on the GPU machine, from the repository root's copy
#
# The GPU machine (DESIGN.md section 8) has Python 3.12 and a CUDA build of torch, no
# network and 10 minutes a command. deqfl itself runs from the copy (PYTHONPATH, no install);
# what its image lacks travels as wheels in .whl/ and goes into a private folder. The CIFAR-10
# archive travels too: copy it into an ignored folder of the repository, e.g.
#   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/    (and carry .whl and .data)
# or point CIFAR_DATA at it. The run (each step under its own timeout; a step cut short
# keeps what it finished, and both steps resume from their checkpoints if rerun with the
# same $OUT):
#   1. the environment: nvidia-smi, torch, CUDA; the archive decoded into the cache;
#   2. the central check: `deqfl central` of mdeq-small (about 170K parameters) on
#      CIFAR-10 without augmentation, Adam 1e-3 cosine over CENTRAL_EPOCHS epochs, batch 128,
#      forward cap 18, on cuda (at most 230 s);
#   3. the slice of the suite: `deqfl reproduce --quick --cifar-only --gpu --only E1`, the
#      protocol's GPU size (`cifar_protocol.SLICE`: E1 of mdeq-small-8 and resnet-8, 15
#      rounds, a local epoch a round) on cuda, runs stored as JSON (at most 230 s).
# Results in $OUT (at most 8 files come back from the GPU machine): env.txt, central.log,
# central-metrics.jsonl, reproduce.log, results.tar.gz (the stored runs and the report, to
# unpack into docs/results/gpu-cifar), summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ "${1:-}" = fetch ]; then
    exec scripts/gpu_check.sh fetch
fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [fetch]" >&2
    exit 2
fi

OUT=${OUT:-$PWD/gpu-cifar}
DEVICE=${DEVICE:-cuda}            # cpu: a dry run of the same steps (tests, tiny sizes)
CENTRAL_EPOCHS=${CENTRAL_EPOCHS:-8}
CENTRAL_SECONDS=${CENTRAL_SECONDS:-230}
SUITE_SECONDS=${SUITE_SECONDS:-230}
CENTRAL_EXTRA=${CENTRAL_EXTRA:-}  # e.g. "--train-subset 256 --eval-subset 200" for a dry run
WORK=${WORK:-/tmp/deqfl-gpu-cifar}
mkdir -p "$OUT" "$WORK"
CIFAR_DATA=${CIFAR_DATA:-}
for candidate in "$CIFAR_DATA" .data/cifar10-jpeg.tar.gz shared/data/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz; do
    if [ -n "$candidate" ] && [ -e "$candidate" ]; then CIFAR_DATA=$(realpath "$candidate"); break; fi
done
[ -e "$CIFAR_DATA" ] || { echo "no CIFAR-10 archive: set CIFAR_DATA or copy it to .data/cifar10-jpeg.tar.gz" >&2; exit 1; }
export FLWR_TELEMETRY_ENABLED=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export DEQFL_CACHE_DIR=${DEQFL_CACHE_DIR:-/tmp/deqfl-cache}
SITE=/tmp/deqfl-site
started=$SECONDS

# 1. what is missing, from the wheels; then the environment
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "installing the wheels in .whl failed" >&2; exit 1; }
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import deqfl.experiments.central, deqfl.experiments.reproduce.cifar_protocol' \
    || { echo "deqfl does not import: run '$0 fetch' where pip reaches PyPI and carry .whl/" >&2; exit 1; }
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# decode the archive into the cache once (about 10-20 s), outside the steps' timeouts
timeout 60 "$PY" -c 'import sys; from deqfl.data import load_dataset; load_dataset("cifar10", data_dir=sys.argv[1])' \
    "$CIFAR_DATA" || { echo "decoding $CIFAR_DATA failed" >&2; exit 1; }
echo "CIFAR-10 decoded at $((SECONDS - started)) s"

# 2. the central check (resumes its own checkpoints when $WORK survives)
central=(central --resume "$WORK/central")
if [ ! -e "$WORK/central/central.json" ]; then
    # shellcheck disable=SC2086
    central=(central --model mdeq-small --dataset cifar10 --data-dir "$CIFAR_DATA" --epochs "$CENTRAL_EPOCHS"
             --batch-size 128 --optimizer adam --lr 0.001 --schedule cosine --augment none --forward-cap 18
             --checkpoint-steps 100 --device "$DEVICE" --out "$WORK/central" $CENTRAL_EXTRA)
fi
timeout "$CENTRAL_SECONDS" "$PY" -m deqfl.cli.main "${central[@]}" > "$OUT/central.log" 2>&1
central_rc=$?
cp "$WORK/central/metrics.jsonl" "$OUT/central-metrics.jsonl" 2>/dev/null
echo "central: exit $central_rc ($(grep -c . "$OUT/central-metrics.jsonl" 2>/dev/null || echo 0) epochs logged)"

# 3. the GPU slice of the CIFAR-10 suite, into a store of its own
suite_args=(--quick --cifar-only --gpu --only E1)
[ "$DEVICE" = cuda ] || suite_args=(--quick --cifar-only --only E1)  # dry run: the CPU smoke size
timeout "$SUITE_SECONDS" "$PY" -m deqfl.cli.main reproduce "${suite_args[@]}" --data-dir "cifar10=$CIFAR_DATA" \
    --out "$WORK/reproduce" --store "$WORK/reproduce/results" > "$OUT/reproduce.log" 2>&1
suite_rc=$?
echo "reproduce: exit $suite_rc ($(ls "$WORK/reproduce/results" 2>/dev/null | grep -c cifar10) CIFAR-10 runs stored)"
tar -czf "$OUT/results.tar.gz" -C "$WORK/reproduce" --exclude runs . 2>/dev/null

{
    echo "device $DEVICE, $((SECONDS - started)) s in all; central exit $central_rc, reproduce exit $suite_rc"
    tail -n 3 "$OUT/central-metrics.jsonl" 2>/dev/null
    grep -h "final accuracy" "$OUT/reproduce.log" 2>/dev/null
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
[ "$central_rc" = 0 ] && [ "$suite_rc" = 0 ]

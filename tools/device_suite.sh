#!/usr/bin/env bash
# The CUDA benchmarks in one call on a lent GPU machine (see docs/performance.md).
#
# Prepare here with tools/device_bundle.sh, then run on the GPU machine from the
# repository root, carrying .device:
#     PART=bench bash tools/device_suite.sh    # the benchmarks (steps capped at 9 min)
#     PART=train bash tools/device_suite.sh    # the MAML runs (capped at 9 min)
#     QUICK=1 DEVICE=cpu bash tools/device_suite.sh   # the same flow, smoke-sized, anywhere
# Each part fits one device call (600 s); PART=all (the default) runs both.
# It installs .device/wheels and fewnorm itself into $SITE (default /tmp/site) with no
# registry, points FEWNORM_DATA at .device/data, and runs each step under its own time
# limit so one slow step cannot eat the machine's time; every step's output goes to
# $OUT/<step>.log (the device tool brings $OUT back) and a line per step to $OUT/steps.txt.
# A failed step is recorded and the next one runs; the exit status is the number failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/fewnorm-device-out}
QUICK=${QUICK:-}
PART=${PART:-all}
mkdir -p "$OUT" "$SITE"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FEWNORM_DATA="$PWD/.device/data" FEWNORM_CACHE="$OUT/cache"
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the outcome
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    local command="$*" line
    line=$(printf '%-20s rc=%-3s %4ss  %.160s' "$name" "$rc" "$(($(date +%s) - start))" "${command//$'\n'/ }")
    echo "$line" >>"$OUT/steps.txt"  # the record first: a closed stdout must not lose it
    echo "$line" || true
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    return 0
}

if [ ! -d .device/wheels ]; then
    echo "error: .device/wheels not found: run tools/device_bundle.sh here first and carry .device" >&2
    exit 2
fi
step install 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .device/wheels/*.whl
step install-fewnorm 60 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .
# -P: the checkout's fewnorm/ (no cli/, no episodes/) must not shadow the installed package.
step environment 60 "$PY" -P -c "
import torch, fewnorm.cli.main, learn2learn
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi

quick=()
[ -n "$QUICK" ] && quick=(--quick)
threads=8
[ "$DEVICE" = cpu ] && threads=2
common=(--device "$DEVICE" --threads "$threads" "${quick[@]}")
# The installed console script: `python -m fewnorm.cli` from the repository root would import
# the checkout's fewnorm/ (which lacks cli/ and episodes/) instead of the installed package.
fewnorm=("$PY" "$SITE/bin/fewnorm")

if [ "$PART" != train ]; then
    step vs-learn2learn 200 "$PY" benchmarks/vs_learn2learn.py "${common[@]}"
    step loop-overhead 90 "$PY" benchmarks/loop_overhead.py "${common[@]}"
    if [ "$DEVICE" != cpu ]; then  # bfloat16 is emulated on most CPUs: minutes, and no result
        step loop-overhead-bf16 90 "$PY" benchmarks/loop_overhead.py "${common[@]}" --amp bf16
    fi
    step memory-format 90 "$PY" benchmarks/memory_format.py "${common[@]}" \
        --norms batchnorm,groupnorm,instancenorm,swbn,tasknorm-i
    step maml-memory 90 "$PY" benchmarks/maml_memory.py --device "$DEVICE" "${quick[@]}"
fi
train=(train --algo maml --dataset omniglot-minimal --ways 5 --shots 1 --device "$DEVICE" --threads "$threads")
train+=(--no-progress --json)
if [ -n "$QUICK" ]; then
    train+=(--val-every 2 --val-episodes 2 --test-episodes 4)
    done_when=(--episodes 4) mb32=(--episodes 2)
else
    done_when=() mb32=(--episodes 1000 --val-every 500)  # 32,000 tasks: speed at Finn's batch
fi
# The MAML done-when on the GPU (meta-batch 1: the per-task loop), then meta-batch 32,
# vectorized by default on CUDA.
if [ "$PART" != bench ]; then
    step maml-done-when 250 "${fewnorm[@]}" "${train[@]}" "${done_when[@]}" --out "$OUT/runs/maml"
    step maml-meta-batch-32 250 "${fewnorm[@]}" "${train[@]}" --meta-batch 32 "${mb32[@]}" \
        --out "$OUT/runs/maml-mb32"
fi
echo "$failed step(s) failed; logs in $OUT" >>"$OUT/steps.txt"
echo "$failed step(s) failed; logs in $OUT"
exit "$failed"

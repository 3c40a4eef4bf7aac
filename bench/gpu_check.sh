#!/usr/bin/env bash
# The GPU checks in one call of a lent CUDA machine, sized for a few minutes of device time.
#
#   bash bench/gpu_check.sh --prepare     # here, once: wheels of what the device image lacks
#                                         # (hydra-core, omegaconf, antlr4, simplejpeg,
#                                         # DeepSpeed and its needs) into .devsite/
#   device run: command "bash bench/gpu_check.sh", carry [".devsite"], timeout_s 540
#
# On the CUDA machine (its python3 already holds torch, timm, einops, transformers and
# scikit-image) it installs mim from this tree and the carried wheels into a scratch folder,
# without dependencies or network, then runs, most wanted first, each part under its own time
# limit and all within MIM_CHECK_BUDGET seconds (520: keep timeout_s above it):
#   1. nvidia-smi, the versions and the plugins;
#   2. `python -m bench --only gpu`: figure 6, the MFU of MAE ViT-L/16 bf16 pretraining
#      (eager, train.compile=blocks and =model) and images/s;
#   3. `mim train modality=image experiment=demo` on CUDA for 40 steps (train.precision=auto:
#      bf16 there), then the same run to 60 steps, which must resume from step 40;
#   4. the demo for 20 steps with train.compile=blocks;
#   5. the demo for 20 steps with train.precision=fp16 (autocast and the dynamic loss scale:
#      metrics-fp16.jsonl must report loss_scale and overflow_steps);
#   6. the same under backend=deepspeed (ZeRO-2, DeepSpeed's fp16 loss scale; not in the quick
#      check: DeepSpeed runs fp16 on CUDA only here);
#   7. `python -m bench --only feed`: figure 11, cores per accelerator, and GPU JPEG decoding;
#   8. `python -m bench --only image --compile blocks,model`: figures 1-2 at batch 64.
# MIM_CHECK_SKIP=bench-gpu,bench-image leaves those parts out (a second call of a session).
# Everything goes to $OUT (check.log, bench-gpu.json, bench-feed.json, bench-image.json, the
# demo run's metrics, derived values and last picture, the fp16 runs' metrics); the exit status
# is the number of parts that failed. Record the device with every figure in bench/RESULTS.md. PY picks the
# interpreter (default python3; a relative path is taken from the repository root). On a machine
# without CUDA the same parts run on the CPU, which checks this script
# (tests/e2e/test_gpu_check.py), and figure 6 is left out.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/mim-gpu-check}
SITE=${MIM_CHECK_SITE:-/tmp/mim-check-site}
RUNS=${MIM_CHECK_RUNS:-/tmp/mim-check-runs}
WHEELS=${MIM_CHECK_WHEELS:-.devsite}  # the carried wheels
BUDGET=${MIM_CHECK_BUDGET:-520}  # seconds for all parts: under the device call's timeout_s
# parts to leave out, by name, comma-separated (e.g. bench-gpu when figure 6 is already taken)
SKIP=${MIM_CHECK_SKIP:-}

if [ "${1:-}" = "--prepare" ]; then
    PY=${PY_PREPARE:-.venv/bin/python}
    version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    rm -rf "$WHEELS" && mkdir -p "$WHEELS" || exit 1
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "hydra-core==$(version hydra-core)" \
        "omegaconf==$(version omegaconf)" \
        "antlr4-python3-runtime==$(version antlr4-python3-runtime)" || exit 1
    # compiled: the wheel for the device's interpreter (Python ${MIM_CHECK_DEVICE_PY:-3.12}, x86_64)
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
        --python-version "${MIM_CHECK_DEVICE_PY:-3.12}" --implementation cp \
        --platform manylinux2014_x86_64 "simplejpeg==$(version simplejpeg)" || exit 1
    # DeepSpeed (a source distribution: built here into a pure-Python wheel, its ops compiled
    # on first use there) and what the device image lacks of its requirements
    if version deepspeed >/dev/null 2>&1; then
        "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" \
            "deepspeed==$(version deepspeed)" || exit 1
        "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
            --python-version "${MIM_CHECK_DEVICE_PY:-3.12}" --implementation cp \
            --platform manylinux2014_x86_64 "hjson==$(version hjson)" \
            "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
            "annotated-types==$(version annotated-types)" \
            "typing-inspection==$(version typing-inspection)" || exit 1
    fi
    ls "$WHEELS"
    exit 0
fi

mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 99
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # we cd below
LOG="$OUT/check.log"
: >"$LOG"
failed=0
say() { echo "[gpu-check] $*" | tee -a "$LOG"; }
part() {  # part NAME SECONDS COMMAND...: run, log, count a failure, within the budget
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    if [[ ",$SKIP," == *",$name,"* ]]; then
        say "== $name: skipped (MIM_CHECK_SKIP)"
        return 0
    fi
    if [ $((BUDGET - SECONDS - 10)) -lt "$limit" ]; then limit=$((BUDGET - SECONDS - 10)); fi
    if [ "$limit" -lt 20 ]; then
        say "== $name: not run, the budget is spent"
        failed=$((failed + 1))
        return 1
    fi
    say "== $name (limit ${limit} s)"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    say "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || failed=$((failed + 1))
    return "$rc"
}

# MIM_CHECK_QUICK=1: tiny step counts and bench --quick (the test of this script on a CPU)
quick=${MIM_CHECK_QUICK:-0}
if [ "$quick" = 1 ]; then
    steps=(4 6 2) bench_size=(--quick --precisions fp32)
else
    steps=(40 60 20) bench_size=()
fi

say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    2>/dev/null || echo 'no nvidia-smi')"
wheels=("$WHEELS"/*.whl)
if [ ! -e "${wheels[0]}" ]; then
    wheels=()
    "$PY" -c "import hydra, omegaconf" 2>/dev/null || {
        say "$PY lacks hydra-core and omegaconf, and $WHEELS/ holds no wheels: run" \
            "'bash bench/gpu_check.sh --prepare' where pip works and carry $WHEELS"
        exit 99
    }
fi
rm -rf "$SITE" "$SITE.src" "$RUNS"
# built from a copy of the package's sources: no build/ or egg-info left in this tree, and no
# stale file from an earlier build/ in the install
mkdir -p "$SITE.src" && cp -r pyproject.toml README.md mim modalities launchers configs \
    "$SITE.src" || exit 99
part install 180 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
    --target "$SITE" "$SITE.src" "${wheels[@]}" || {
    say "install failed: nothing else can run"
    exit 99
}
# the installed mim first (this tree's mim/ lacks the modalities and launchers that the
# install maps in), this tree after it for `bench`; run from elsewhere so that the working
# directory shadows neither
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
mkdir -p "$RUNS" && cd "$RUNS" || exit 99
part versions 60 "$PY" -c "import mim, torch, timm, transformers  # mim first: mim/_compat.py
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())
print('timm', timm.__version__, 'transformers', transformers.__version__)
print('mim from', mim.__file__)"
part plugins 60 "$PY" -m mim plugins

# figure 6 first: it is what only a GPU can measure
part bench-gpu 300 "$PY" -m bench --only gpu "${bench_size[@]}" --json "$OUT/bench-gpu.json"

demo=("$PY" -m mim train modality=image experiment=demo train.log_every=2)
if part "train-${steps[0]}" 180 "${demo[@]}" train.max_steps="${steps[0]}" \
        run.dir="$RUNS/eager"; then
    part "resume-to-${steps[1]}" 180 "${demo[@]}" train.max_steps="${steps[1]}" \
        run.dir="$RUNS/eager" run.resume=must
    grep -q "resumed from .* (step ${steps[0]}," "$LOG" || {
        say "resume-to-${steps[1]}: the log shows no resume from step ${steps[0]}"
        failed=$((failed + 1))
    }
fi
part compile-blocks 240 "${demo[@]}" train.max_steps="${steps[2]}" train.compile=blocks \
    run.dir="$RUNS/blocks"
if part fp16 180 "${demo[@]}" train.max_steps="${steps[2]}" train.precision=fp16 \
        run.dir="$RUNS/fp16"; then
    grep -q '"loss_scale"' "$RUNS/fp16/metrics.jsonl" || {
        say "fp16: metrics.jsonl reports no loss_scale"
        failed=$((failed + 1))
    }
fi
if [ "$quick" = 1 ]; then  # DeepSpeed runs fp16 on CUDA, or on CPUs with AVX512-FP16 / AMX-FP16
    say "== deepspeed-fp16: not run in the quick check (DeepSpeed's fp16 needs CUDA)"
elif part deepspeed-fp16 240 "${demo[@]}" train.max_steps="${steps[2]}" backend=deepspeed \
        backend.zero_stage=2 train.precision=fp16 run.dir="$RUNS/ds-fp16"; then
    grep -q '"loss_scale"' "$RUNS/ds-fp16/metrics.jsonl" || {
        say "deepspeed-fp16: metrics.jsonl reports no loss_scale"
        failed=$((failed + 1))
    }
fi
cp "$RUNS/fp16/metrics.jsonl" "$OUT/metrics-fp16.jsonl" 2>/dev/null
cp "$RUNS/ds-fp16/metrics.jsonl" "$OUT/metrics-ds-fp16.jsonl" 2>/dev/null
cp "$RUNS/eager/metrics.jsonl" "$OUT/metrics-eager.jsonl" 2>/dev/null
cp "$RUNS/eager/derived.json" "$OUT/derived-eager.json" 2>/dev/null
picture=$(ls "$RUNS"/eager/pictures/*.png 2>/dev/null | tail -1)
[ -n "$picture" ] && cp "$picture" "$OUT/picture.png"

part bench-feed 120 "$PY" -m bench --only feed "${bench_size[@]}" --json "$OUT/bench-feed.json"
part bench-image 300 "$PY" -m bench --only image "${bench_size[@]}" --compile blocks,model \
    --json "$OUT/bench-image.json"
grep "^|" "$LOG" | tail -30
say "failed parts: $failed"
exit "$failed"

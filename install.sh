#!/usr/bin/env bash
# Set up mim: a virtual environment (or the active one), torch, mim and all its dependencies.
#
#   ./install.sh            -> .venv with mim installed (editable) with every extra this platform
#                              can take: mim-pretrain[all] (DeepSpeed, transformers, nibabel,
#                              MLflow, W&B)
#   ./install.sh --test     -> the same plus the test tools
#
# torch: an importable torch in the target environment is kept as it is (a CUDA or ROCm build on a
# GPU machine); otherwise $MIM_TORCH_SPEC (default torch==2.13.0) is installed first. Everything
# else is then installed under a constraint that pins the torch version, so pip never swaps it.
set -euo pipefail
cd "$(dirname "$0")"

test=""
[[ "${1:-}" == "--test" ]] && test=",test"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    py="$VIRTUAL_ENV/bin/python"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
    py="$CONDA_PREFIX/bin/python"
else
    venv="${MIM_VENV:-.venv}"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    py="$venv/bin/python"
fi
pip=("$py" -m pip --disable-pip-version-check -q)

if ! "$py" -c "import torch" 2>/dev/null; then
    echo "[mim] installing ${MIM_TORCH_SPEC:-torch==2.13.0}"
    "${pip[@]}" install "${MIM_TORCH_SPEC:-torch==2.13.0}"
fi
torch_version=$("$py" -c "import torch; print(torch.__version__)")
constraint="$(mktemp)"
trap 'rm -f "$constraint"' EXIT
echo "torch==${torch_version}" > "$constraint"

echo "[mim] installing mim[all${test}] with torch pinned at ${torch_version}"
if ! PIP_CONSTRAINT="$constraint" "${pip[@]}" install -e ".[all${test}]"; then
    # DeepSpeed is a source distribution on most platforms (built against torch); the rest has
    # wheels everywhere, so without it mim installs and every other backend runs
    echo "[mim] warning: mim[all] did not install here (see above); installing it without" \
         "DeepSpeed (backend=deepspeed unavailable)" >&2
    PIP_CONSTRAINT="$constraint" "${pip[@]}" install -e ".[bench,hf,nifti,raster,mlflow,wandb${test}]"  # all but one
fi

# A torchvision built for another torch (here: the CUDA wheel next to a CPU torch) fails at its
# import; mim fixes that when imported first (mim/_compat.py). A .pth line applies the same fix
# at the first `import torchvision` of any program in this environment; only where it is needed.
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$site/mim-torchvision-ops.pth"
import_error=$("$py" -c "import torchvision" 2>&1 || true)
if [[ "$import_error" == *"operator torchvision::nms does not exist"* ]]; then
    "$py" -c "from mim._compat import pth_line; print(pth_line())" > "$site/mim-torchvision-ops.pth"
    echo "[mim] torchvision does not match torch ${torch_version}: added mim-torchvision-ops.pth"
fi

after=$("$py" -c "import torch; print(torch.__version__)")
if [[ "$after" != "$torch_version" ]]; then
    echo "[mim] error: pip replaced torch ${torch_version} with ${after}" >&2
    exit 1
fi
echo "[mim] ready: $("$py" -c 'import sys; print(sys.prefix)') (torch ${after})"

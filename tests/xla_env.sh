#!/usr/bin/env bash
# Build (or reuse) a separate virtual environment for backend=xla and print its python.
#
#   tests/xla_env.sh            -> prints <venv>/bin/python on its last line
#
# torch_xla 2.9.0 needs torch 2.9.0 exactly (ABI; its metadata does not say so), so it cannot share
# the main venv (torch 2.13). The venv lives at ${MIM_XLA_VENV:-$HOME/.cache/mim/xla-venv}
# (~4 GB download, ~7 GB on disk) and is reused when its marker file is present. mim is installed
# editable with --no-deps plus the minimal deps of image training, all under a constraint pinning
# torch 2.9.0 (deepspeed, decord, av, pytorchvideo are left out).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MIM_XLA_VENV:-$HOME/.cache/mim/xla-venv}"
marker="$venv/.mim-xla-ready"
# one builder at a time: the test session starts a build in the background (tests/conftest.py)
# and the tests that need the venv call this script again, which waits here for that build
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
torch_spec="torch==2.9.0"
xla_spec="torch_xla==2.9.0"

# image training's dependencies (mim is installed --no-deps); the marker records them with the
# checkout, so a reused venv gets a dependency added since it was built
deps=("timm>=1.0,<2" "torchvision==0.24.0" "einops>=0.7" "hydra-core>=1.3,<1.4"
      "omegaconf>=2.3,<2.4" "numpy>=1.24" "pillow>=10" "scikit-image>=0.22" "tensorboard>=2.14"
      "tqdm>=4.60" "safetensors>=0.4" "simplejpeg>=1.7" "fsspec>=2023.1")
ready="$repo ${deps[*]}"
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check -q)
constraint="$(mktemp)"
trap 'rm -f "$constraint"' EXIT
printf '%s\n' "$torch_spec" "torchvision==0.24.0" > "$constraint"

if [[ -f "$marker" && -x "$py" ]]; then
    # reused; its deps and the editable install follow this checkout
    if [[ "$(cat "$marker")" != "$ready" ]]; then
        PIP_CONSTRAINT="$constraint" "${pip[@]}" install "${deps[@]}" >&2
        "${pip[@]}" install --no-deps -e "$repo" >&2
        echo "$ready" > "$marker"
    fi
    echo "$py"
    exit 0
fi

[[ -x "$py" ]] || python3 -m venv "$venv"
echo "[mim-xla] installing $torch_spec $xla_spec into $venv" >&2
"${pip[@]}" install "$torch_spec" "$xla_spec" >&2
echo "[mim-xla] installing mim (--no-deps) and image-training deps" >&2
PIP_CONSTRAINT="$constraint" "${pip[@]}" install "${deps[@]}" >&2
PIP_CONSTRAINT="$constraint" "${pip[@]}" install --no-deps -e "$repo" >&2
"$py" -c "import torch, torch_xla; assert torch.__version__.startswith('2.9.0'), torch.__version__" >&2
echo "$ready" > "$marker"
echo "$py"

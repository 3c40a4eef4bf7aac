#!/usr/bin/env bash
# Set up mim: a virtual environment (or the active one), torch, mim and all its dependencies.
#
#   ./install.sh            -> .venv with mim installed (editable)
#   ./install.sh --test     -> the same plus the test tools
#
# torch: an importable torch in the target environment is kept as it is (a CUDA or ROCm build on a
# GPU machine); otherwise $MIM_TORCH_SPEC (default torch==2.13.0) is installed first. Everything
# else is then installed under a constraint that pins the torch version, so pip never swaps it.
set -euo pipefail
cd "$(dirname "$0")"

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

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

echo "[mim] installing mim${extras} with torch pinned at ${torch_version}"
PIP_CONSTRAINT="$constraint" "${pip[@]}" install -e ".${extras}"

after=$("$py" -c "import torch; print(torch.__version__)")
if [[ "$after" != "$torch_version" ]]; then
    echo "[mim] error: pip replaced torch ${torch_version} with ${after}" >&2
    exit 1
fi
echo "[mim] ready: $("$py" -c 'import sys; print(sys.prefix)') (torch ${after})"

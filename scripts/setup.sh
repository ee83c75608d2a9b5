#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install hilo-export
# with its test tools. Safe to run again: an up-to-date environment installs nothing.
#   HILO_PYTHON  interpreter to build the venv from (default: python3)
#   HILO_EXTRAS  extras to install (default: cpu,test: ONNX Runtime's CPU wheel and what the
#                tests run; on a CUDA machine gpu,test)
#   HILO_TORCH   torch requirement installed first (default: torch==2.13.0, the CPU wheel
#                here; elsewhere add e.g. --index-url https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${HILO_PYTHON:-python3}
torch_spec=${HILO_TORCH:-torch==2.13.0}
extras=${HILO_EXTRAS:-cpu,test}

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
# torch first, on its own: if another package asked for it, pip could pick a CUDA build.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "setup: installing $torch_spec"
    # shellcheck disable=SC2086
    "${pip[@]}" install $torch_spec
fi
# The editable install only changes when pyproject.toml does: a stamp of it skips pip (and its
# index look-ups) on a second run.
stamp=.venv/.hilo-export-setup
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && .venv/bin/python -c 'import hilo_export' 2>/dev/null; then
    echo "setup: hilo-export[$extras] is up to date"
else
    echo "setup: installing hilo-export[$extras]"
    "${pip[@]}" install -e ".[$extras]"
    echo "$wanted" > "$stamp"
fi
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

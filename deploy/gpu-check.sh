#!/usr/bin/env bash
# clonesweep's GPU check for an air-gapped GPU machine (one H100, under 5 minutes).
#
# The machine has JAX with CUDA (and PyTorch) installed, but no Ray, no TensorFlow and no
# package registry, and at most 64 MiB of files can be brought in. So this runs clonesweep's
# worker path (rebuild, train, report, fused ensembles) on Keras's JAX backend without Ray:
# packed CNN trials on the one GPU, and a fused ensemble against separate members. It prints
# trials per minute, GPU memory per trial and the fused speedup; the last line is JSON.
#
# Bring along (about 36 MiB for Python 3.11; 14 MiB without numpy and ml_dtypes, which JAX
# already has): this checkout, and a wheels/ folder made on a connected machine with
#     pip download keras optuna --only-binary=:all: --python-version 3.11 \
#         --platform manylinux2014_x86_64 -d wheels/
# (use the target's Python version). Then, on the GPU machine:
#     deploy/gpu-check.sh            # the real check, on the GPU
#     deploy/gpu-check.sh --cpu      # smoke mode: JAX on the CPU, tiny sizes
# Other options go to deploy/gpu_check.py (--trials, --packed, --epochs, --members).
#
# Environment: PYTHON (default python3), CLONESWEEP_WHEELS (default <checkout>/wheels),
# CLONESWEEP_CHECK_VENV (default $TMPDIR/clonesweep-gpu-check), CLONESWEEP_CHECK_TIMEOUT (s).
# Nothing outside that virtual environment is changed: it sees the machine's packages
# (--system-site-packages) and adds only what the wheels bring that is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels="${CLONESWEEP_WHEELS:-$repo/wheels}"
venv="${CLONESWEEP_CHECK_VENV:-${TMPDIR:-/tmp}/clonesweep-gpu-check}"
limit="${CLONESWEEP_CHECK_TIMEOUT:-290}"

export KERAS_BACKEND=jax  # no TensorFlow here: Keras must not try its default backend

# A venv without its own pip (no ensurepip needed): the machine's pip installs into it.
"$python" -m venv --without-pip --system-site-packages "$venv"
py="$venv/bin/python"
if [ -d "$wheels" ]; then
    echo "gpu-check: installing keras and optuna from $wheels (no index)"
    "$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$wheels" \
        keras optuna
else
    echo "gpu-check: no $wheels folder: using the keras and optuna already installed"
fi
"$py" -c "import keras" 2>/dev/null || {
    echo "gpu-check: keras is not importable; bring the wheels (see the top of $0)" >&2
    exit 2
}
# clonesweep runs from this checkout, without its dependencies (Ray, TensorFlow, scikit-learn
# are neither needed nor installed for the worker path).
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
for arg in "$@"; do [ "$arg" = "--cpu" ] && export JAX_PLATFORMS=cpu; done
"$py" -c "import jax; print('gpu-check: jax', jax.__version__, 'devices:', jax.devices())" || {
    echo "gpu-check: JAX is not importable here" >&2
    exit 2
}
if command -v timeout >/dev/null 2>&1; then
    exec timeout "$limit" "$py" "$here/gpu_check.py" "$@"
fi
exec "$py" "$here/gpu_check.py" "$@"

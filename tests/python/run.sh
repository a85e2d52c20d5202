#!/bin/sh
# The Python package's tests (make pytest; make check runs it last).
# Makes a venv in build/venv on first use, installs the test dependencies
# from PyPI (numpy, pytest, pandas, mypy; kept between runs), installs the package
# from this tree with `pip install .` and runs pytest on tests/python.
# Environment: PYTHON (default python3), LM_VENV (default build/venv),
# LM_BIN (the CLI to compare with), LM_MODELS (the shared test models),
# LM_PRELOAD (LD_PRELOAD for the pytest process only: make pytest-asan),
# LAYERMAP_LIBRARY (test another liblayermap.so than the installed one).
set -e
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VENV=${LM_VENV:-build/venv}
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        # no Python, or Debian's python3 without venv/ensurepip (a separate package)
        echo "pytest: $PY cannot make a venv -- installing python3 and python3-venv (Debian)" >&2
        rm -rf "$VENV"
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
        "$PY" -m venv "$VENV"
    fi
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install numpy pytest pandas mypy setuptools wheel
# the package as a user gets it (the wheel with liblayermap.so inside); no build
# isolation so that repeated runs need no download
$PIP install --no-build-isolation --no-deps --force-reinstall .
# run from tests/python so that `import layermap` is the installed package
cd tests/python
if [ -n "$LM_PRELOAD" ]; then
    exec env LD_PRELOAD="$LM_PRELOAD" "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
fi
exec "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

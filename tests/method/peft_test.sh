#!/bin/sh
# make test-peft: `layermap lora`'s JSON loaded by PEFT (tests/method/test_peft.py).
# Creates (once) a venv in $PEFT_VENV (default build/venv-peft) with peft,
# transformers and torch from PyPI (the plain PyPI torch wheel: large, several
# minutes the first time), then runs the test. Exit non-zero on any failure.
set -eu
cd "$(dirname "$0")/../.."
venv=${PEFT_VENV:-build/venv-peft}
bin=${LM_BIN:-build/layermap}
[ -x "$bin" ] || { echo "peft_test: $bin is not built (run make)"; exit 2; }
if ! "$venv/bin/python" -c "import peft, transformers, torch" 2>/dev/null; then
    echo "peft_test: installing peft, transformers, torch into $venv (PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q peft transformers torch
fi
LM_BIN=$bin "$venv/bin/python" tests/method/test_peft.py

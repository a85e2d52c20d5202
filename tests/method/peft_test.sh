#!/bin/sh
# make test-peft: `layermap lora`'s JSON loaded by PEFT (tests/method/test_peft.py).
# The venv is scripts/ref_venv.sh's (peft, transformers and torch from PyPI,
# pinned there; made on first use: large, several minutes the first time);
# PEFT_PY=python overrides it. Exit non-zero on any failure.
set -eu
cd "$(dirname "$0")/../.."
bin=${LM_BIN:-build/layermap}
[ -x "$bin" ] || { echo "peft_test: $bin is not built (run make)"; exit 2; }
[ -n "${PEFT_PY:-}" ] || PEFT_PY=$(scripts/ref_venv.sh) || { echo "peft_test: scripts/ref_venv.sh failed"; exit 1; }
LM_BIN=$bin "$PEFT_PY" tests/method/test_peft.py

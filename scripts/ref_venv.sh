#!/bin/sh
# ref_venv.sh -- the Python side of layermap's peers and references, from PyPI,
# in one venv: PyTorch (bench/torch_attr.py, the speed peer; the float64
# reference generators in tests/ref), transformers + accelerate (HF's own
# model code as a second reference, and GGUF loading), PEFT (make test-peft
# judges `layermap lora`'s JSON), gguf, tokenizers, safetensors, numpy, scipy.
#
#   scripts/ref_venv.sh            create or complete the venv, print its python
#   scripts/ref_venv.sh --path     print the python's path only (no install)
#
# Where: $LAYERMAP_REFVENV, default $LAYERMAP_CACHE/venv-ref
# ($LAYERMAP_CACHE defaults to ~/.cache/layermap). Idempotent: when every
# module imports, nothing is installed. The plain PyPI torch wheel is large
# (about 5 GB with its CUDA libraries; CPU is all layermap's tests use) and
# takes several minutes the first time. Versions are pinned so that a bench
# table says which peer it measured; change them here, nowhere else.
set -eu
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
VENV=${LAYERMAP_REFVENV:-$CACHE/venv-ref}
PY=$VENV/bin/python
if [ "${1:-}" = --path ]; then echo "$PY"; exit 0; fi

PKGS="torch==2.15.0 transformers==5.24.0 accelerate==1.16.0 peft==0.21.2 gguf==0.19.0
      tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6 scipy==1.17.1"
MODS="torch transformers accelerate peft gguf tokenizers safetensors numpy scipy"

probe="import $(echo $MODS | tr ' ' ',')"
if [ -x "$PY" ] && "$PY" -c "$probe" 2>/dev/null; then echo "$PY"; exit 0; fi
echo "ref_venv: installing into $VENV (PyPI): $(echo $PKGS | tr '\n' ' ')" >&2
command -v python3 >/dev/null || { echo "ref_venv: python3 not found" >&2; exit 1; }
mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || python3 -m venv "$VENV" || {
    echo "ref_venv: python3 -m venv $VENV failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q --disable-pip-version-check $PKGS >&2 || {
    echo "ref_venv: pip install into $VENV failed" >&2; exit 1; }
"$PY" -c "$probe" || { echo "ref_venv: $VENV installed but does not import: $MODS" >&2; exit 1; }
echo "$PY"

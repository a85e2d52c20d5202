#!/bin/sh
# Build llama.cpp's llama-imatrix, llama-quantize and llama-perplexity, the peers
# of layermap's imatrix export (tests/output/imatrix_peer.sh), into a cache.
#
#   scripts/build_llamacpp.sh          download (if needed), build (if needed), print the bin folder
#   scripts/build_llamacpp.sh --check  print the bin folder when the three tools are built, else
#                                      exit 1; never downloads or builds
#
# Source: the PyPI sdist of llama-cpp-python (pinned below), which carries
# llama.cpp's sources in vendor/llama.cpp; fetched with
# `pip download --no-binary :all: --no-deps`. Nothing is vendored into layermap.
# Build: cmake, Release, static libraries, CPU backend for this machine
# (GGML_NATIVE=ON), no networking (LLAMA_OPENSSL=OFF), only the three targets;
# run under `nice -n 5` (about 7 minutes of CPU on 2 cores).
#
# Cache: $LAYERMAP_CACHE (default ~/.cache/layermap). Layout:
#   $CACHE/pkgs/llama_cpp_python-$VER.tar.gz     the sdist
#   $CACHE/llama.cpp-$VER/bin/llama-{imatrix,quantize,perplexity}
# The source and build trees are removed after a successful build (about 400 MB).
# GGML_NATIVE builds for this CPU: a cache copied to an older CPU may not run;
# delete $CACHE/llama.cpp-$VER to rebuild.
set -eu

VER=0.3.36
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
PKGS=$CACHE/pkgs
DEST=$CACHE/llama.cpp-$VER
BIN=$DEST/bin
TOOLS="llama-imatrix llama-quantize llama-perplexity"
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

die() { echo "build_llamacpp: $*" >&2; exit 1; }

built() {
    for t in $TOOLS; do [ -x "$BIN/$t" ] || return 1; done
    "$BIN/llama-quantize" --help >/dev/null 2>&1 || [ $? -eq 1 ]
}

case "${1:-}" in
    --check) built || { echo "build_llamacpp: not built ($BIN)" >&2; exit 1; }; echo "$BIN"; exit 0 ;;
    "") ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build_llamacpp: unknown argument '$1' (use --check)" >&2; exit 2 ;;
esac

if built; then echo "$BIN"; exit 0; fi

command -v cmake >/dev/null 2>&1 || die "cmake not found (scripts/deps.sh llamacpp installs it)"
command -v c++ >/dev/null 2>&1 || die "no C++ compiler (scripts/deps.sh llamacpp installs g++)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' is not available"

SDIST=$PKGS/llama_cpp_python-$VER.tar.gz
if [ ! -f "$SDIST" ]; then
    mkdir -p "$PKGS"
    log=$PKGS/pip-llama-cpp-python.log
    "$PY" -m pip download --no-binary :all: --no-deps --disable-pip-version-check \
        --retries 2 --timeout 60 -d "$PKGS" "llama-cpp-python==$VER" >"$log" 2>&1 ||
        die "pip could not download llama-cpp-python==$VER (see $log)"
    [ -f "$SDIST" ] || die "pip left no $SDIST (see $log)"
fi

WORK=$DEST/work
rm -rf "$WORK"
mkdir -p "$WORK"
tar -xzf "$SDIST" -C "$WORK" || die "cannot unpack $SDIST"
SRC=$WORK/llama_cpp_python-$VER/vendor/llama.cpp
[ -f "$SRC/tools/imatrix/imatrix.cpp" ] || die "$SDIST has no vendor/llama.cpp/tools/imatrix"

log=$DEST/build.log
echo "build_llamacpp: building llama.cpp of llama-cpp-python $VER in $WORK (log $log)" >&2
{
    nice -n 5 cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF &&
    nice -n 5 cmake --build "$WORK/build" --config Release -j "$JOBS" \
        --target $TOOLS
} >"$log" 2>&1 || die "build failed (last lines of $log:) $(tail -n 3 "$log" | tr '\n' ' ')"

mkdir -p "$BIN.tmp"
for t in $TOOLS; do
    f=$(find "$WORK/build" -type f -name "$t" -perm -u+x | head -n 1)
    [ -n "$f" ] || die "the build made no $t (see $log)"
    cp "$f" "$BIN.tmp/$t"
done
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
rm -rf "$WORK"
built || die "$BIN/llama-quantize does not run"
echo "$BIN"

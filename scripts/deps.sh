#!/bin/sh
# Install layermap's build dependencies from Debian when they are missing.
# Idempotent: does nothing when every library is already there.
set -e
# `deps.sh fuzz` (make fuzz): clang with libFuzzer's runtime (Debian libclang-rt-14-dev), only
if [ "$1" = fuzz ]; then
    probe='int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }'
    if printf '%s\n' "$probe" | clang -x c - -fsanitize=fuzzer,address,undefined -o /dev/null 2>/dev/null; then exit 0; fi
    echo "deps: clang cannot link -fsanitize=fuzzer -- installing Debian clang libclang-rt-14-dev" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-14-dev libomp-dev >/dev/null; }; then
        echo "deps: make fuzz needs clang and libFuzzer's runtime: apt-get install clang libclang-rt-14-dev libomp-dev" >&2
        exit 1
    fi
    printf '%s\n' "$probe" | clang -x c - -fsanitize=fuzzer,address,undefined -o /dev/null || {
        echo "deps: clang still cannot link -fsanitize=fuzzer (libclang-rt for this clang version missing?)" >&2
        exit 1
    }
    exit 0
fi
# `deps.sh llamacpp` (scripts/build_llamacpp.sh): cmake and a C++ compiler, only
if [ "$1" = llamacpp ]; then
    command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && exit 0
    echo "deps: building llama.cpp's tools needs cmake and g++ -- installing Debian cmake g++" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ >/dev/null; } || {
        echo "deps: apt-get install cmake g++ failed" >&2
        exit 1
    }
    exit 0
fi
# `deps.sh chromium` (make test-report): Debian's headless-capable Chromium, only
if [ "$1" = chromium ]; then
    command -v chromium >/dev/null 2>&1 && exit 0
    echo "deps: make test-report renders the report in Chromium -- installing Debian chromium" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } || {
        echo "deps: apt-get install chromium failed" >&2
        exit 1
    }
    exit 0
fi
# `deps.sh mpi` (make MPI=1, make test-mpi): Open MPI's compiler wrapper and launcher, only
if [ "$1" = mpi ]; then
    command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 && exit 0
    echo "deps: make MPI=1 needs mpicc and mpirun -- installing Debian openmpi-bin libopenmpi-dev" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; } || {
        echo "deps: apt-get install openmpi-bin libopenmpi-dev failed" >&2
        exit 1
    }
    exit 0
fi
pkgs="cairo libcjson libpcre2-8 libutf8proc openblas"
missing=""
for p in $pkgs; do pkg-config --exists "$p" 2>/dev/null || missing="$missing $p"; done
command -v cc >/dev/null 2>&1 || missing="$missing cc"
[ -f /usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig/openblas.pc ] || [ "$(uname -m)" != x86_64 ] || missing="$missing openblas-openmp"
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$missing fonts-dejavu-core"
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || [ "$(uname -m)" != x86_64 ] || missing="$missing libdnnl-dev"
[ -z "$missing" ] && exit 0
echo "deps: missing:$missing -- installing Debian packages" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libopenblas0-openmp libcjson-dev \
    libpcre2-dev libutf8proc-dev libcairo2-dev fonts-dejavu-core >/dev/null
# oneDNN: bf16 products on AMX / AVX512_BF16 (--compute bf16); x86-64 only
[ "$(uname -m)" != x86_64 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libdnnl-dev >/dev/null

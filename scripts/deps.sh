#!/bin/sh
# Install layermap's build dependencies from Debian when they are missing.
# Idempotent: does nothing when every library is already there.
set -e
pkgs="cairo libcjson libpcre2-8 libutf8proc openblas"
missing=""
for p in $pkgs; do pkg-config --exists "$p" 2>/dev/null || missing="$missing $p"; done
command -v cc >/dev/null 2>&1 || missing="$missing cc"
[ -f /usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig/openblas.pc ] || [ "$(uname -m)" != x86_64 ] || missing="$missing openblas-openmp"
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$missing fonts-dejavu-core"
[ -z "$missing" ] && exit 0
echo "deps: missing:$missing -- installing Debian packages" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libopenblas0-openmp libcjson-dev \
    libpcre2-dev libutf8proc-dev libcairo2-dev fonts-dejavu-core >/dev/null

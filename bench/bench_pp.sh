#!/bin/sh
# bench_pp.sh -- forward prompt processing: 512 tokens of data/calib.txt through
# SmolLM2-135M (Q4_1 GGUF), 2 threads: layermap vs PyTorch and llama.cpp, in one run.
#
#   bench/bench_pp.sh
#
# Environment: MODEL, DATA, PY, THREADS, MAXWAIT, OUTDIR (as bench/bench_attr.sh),
#   LAYERMAP, LM_CORETYPE (see bench_attr.sh), RUNS (default 3; the fastest run is
#   reported, all are listed: on this shared machine other jobs only ever slow a run down),
#   LM_EXTRA (options measured as a second layermap row, e.g. LM_EXTRA='--compute bf16').
#
# layermap:  build/layermap ppl MODEL DATA --seq-len 512 --max-tokens 512
#            (its own "tokens/s": the forward pass only, model load and
#            engine creation excluded; every run is a fresh process, so cold)
# PyTorch:   bench/torch_attr.py --forward-only --max-tokens 512 (inference
#            mode; timed loop only), cold (first pass of the process) and warm
#            (--warmup: one untimed pass first)
# llama.cpp: llama-perplexity (scripts/build_llamacpp.sh) on the same model and
#            text, -c 512 -b 512 --chunks 1: one 512-token batch; 512 over its own
#            "seconds per pass" (printed to 10 ms), and the whole process's wall time
# All three compute the full-vocabulary logits of every position and the NLL.
# llama.cpp runs its matrix products on the quantized weights (8-bit
# activations); its tokenization adds BOS, so its 512 tokens start one token
# earlier in the text. Skipped, with a note, when the tools are not built.
# "CPUs" = CPU time / wall time (layermap: the whole process; torch: the timed
# loop); well below THREADS means something else took the CPUs.
set -eu

cd "$(dirname "$0")/.."
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODEL=${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-data/calib.txt}
[ -n "${PY:-}" ] || PY=$(scripts/ref_venv.sh)
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
MAXWAIT=${MAXWAIT:-300}
OUTDIR=${OUTDIR:-bench/.cache/pp}
N=512
mkdir -p "$OUTDIR"

die() { echo "bench_pp: $*" >&2; exit 1; }

LM=${LAYERMAP:-build/layermap}
if [ -n "${LAYERMAP:-}" ]; then
    [ -x "$LM" ] || die "$LM: not an executable"
elif [ ! -x build/layermap ]; then
    make >"$OUTDIR/make.log" 2>&1 || die "make failed (see $OUTDIR/make.log)"
elif ! make -q >/dev/null 2>&1; then
    make >"$OUTDIR/make.log" 2>&1 \
        || echo "bench_pp: warning: make failed (see $OUTDIR/make.log); using the existing build/layermap" >&2
fi
if [ ! -f "$MODEL" ]; then
    scripts/fetch_models.sh >&2 || die "could not fetch the model"
fi
[ -f "$MODEL" ] || die "$MODEL: not found"
[ -f "$DATA" ] || die "$DATA: not found"
"$PY" -c 'import torch, gguf' 2>/dev/null || die "$PY lacks torch or gguf"
if [ ! -x /usr/bin/time ]; then
    (apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null 2>&1; }) \
        || die "/usr/bin/time missing and apt-get install time failed"
fi

lm() {
    if [ -n "${LM_CORETYPE:-}" ]; then env OPENBLAS_CORETYPE="$LM_CORETYPE" "$@"
    else env -u OPENBLAS_CORETYPE "$@"; fi
}
cpu_busy() {
    a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle = $5 + $6
        if (NR == 1) { t0 = t; i0 = idle } else printf "%d\n", 100 * (1 - (idle - i0) / (t - t0)) }'
}
wait_quiet() {
    [ "$MAXWAIT" -gt 0 ] || return 0
    end=$(( $(date +%s) + MAXWAIT ))
    while [ "$(cpu_busy)" -ge 15 ] && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
}

lm "$LM" tokenize "$MODEL" -f "$DATA" --no-bos --ids >"$OUTDIR/ids.txt" || die "layermap tokenize failed"
VERSION=$(lm "$LM" --version | sed -n 's/^matrix kernel: //p')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

LLB=$(scripts/build_llamacpp.sh --check 2>/dev/null) || LLB=
rm -f "$OUTDIR"/lm.*.time "$OUTDIR"/lmx.*.time "$OUTDIR"/llama.*.time
# lm_ppl TAG [EXTRA ARGS...]: one layermap run, files $OUTDIR/TAG.$r.*
lm_ppl() {
    tag=$1; shift
    wait_quiet
    lm /usr/bin/time -v -o "$OUTDIR/$tag.$r.time" "$LM" ppl "$MODEL" "$DATA" --seq-len $N \
        --max-tokens $N --threads "$THREADS" "$@" >"$OUTDIR/$tag.$r.out" 2>"$OUTDIR/$tag.$r.log" \
        || { cat "$OUTDIR/$tag.$r.log" >&2; die "layermap ppl $* failed"; }
}
r=1
while [ "$r" -le "$RUNS" ]; do
    lm_ppl lm
    # shellcheck disable=SC2086
    [ -z "${LM_EXTRA:-}" ] || lm_ppl lmx $LM_EXTRA
    if [ -n "$LLB" ]; then
        wait_quiet
        /usr/bin/time -v -o "$OUTDIR/llama.$r.time" "$LLB/llama-perplexity" -m "$MODEL" -f "$DATA" -c $N -b $N \
            --chunks 1 -t "$THREADS" >"$OUTDIR/llama.$r.out" 2>"$OUTDIR/llama.$r.log" \
            || { cat "$OUTDIR/llama.$r.log" >&2; die "llama-perplexity failed"; }
    fi
    for mode in cold warm; do
        wait_quiet
        w=; [ $mode = warm ] && w=--warmup
        /usr/bin/time -v -o "$OUTDIR/torch.$mode.$r.time" "$PY" bench/torch_attr.py "$MODEL" --ids "$OUTDIR/ids.txt" \
            --forward-only $w --seq-len $N --max-tokens $N --threads "$THREADS" \
            --json "$OUTDIR/torch.$mode.$r.json" 2>"$OUTDIR/torch.$mode.$r.log" \
            || { cat "$OUTDIR/torch.$mode.$r.log" >&2; die "torch_attr.py failed"; }
    done
    r=$((r + 1))
done

[ -n "$LLB" ] || echo "bench_pp: note: llama.cpp's tools are not built (scripts/build_llamacpp.sh): no llama.cpp row" >&2
"$PY" - "$OUTDIR" "$RUNS" "$VERSION" "$LOAD_BEFORE" "${LM_EXTRA:-}" <<'EOF'
import json, os, re, statistics, sys
out, runs, version, load, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def gtime(path):
    t = open(path).read()
    g = lambda k: re.search(re.escape(k) + r":\s*(.+)", t).group(1).strip()
    w = g("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(w)))
    cpu = float(g("User time (seconds)")) + float(g("System time (seconds)"))
    return wall, cpu, float(g("Maximum resident set size (kbytes)")) / 1024

rows = {}
for r in range(1, runs + 1):
    for tag, name in (("lm", "layermap ppl (cold)"), ("lmx", f"layermap ppl {extra} (cold)")):
        if not os.path.exists(f"{out}/{tag}.{r}.time"):
            continue
        log = open(f"{out}/{tag}.{r}.log").read()
        m = re.search(r"layermap: ([\d.]+) s, ([\d.]+) tokens/s", log)
        o = open(f"{out}/{tag}.{r}.out").read()
        ppl = float(re.search(r"perplexity\s+([\d.]+)", o).group(1))
        wall, cpu, rss = gtime(f"{out}/{tag}.{r}.time")
        rows.setdefault(name, []).append(dict(secs=float(m.group(1)), tps=float(m.group(2)), ppl=ppl,
                                              wall=wall, cpus=cpu / wall, rss=rss))
    for mode in ("cold", "warm"):
        j = json.load(open(f"{out}/torch.{mode}.{r}.json"))
        wall, cpu, rss = gtime(f"{out}/torch.{mode}.{r}.time")
        rows.setdefault(f"PyTorch {j['torch']} forward ({mode})", []).append(
            dict(secs=j["seconds"], tps=j["tokens_per_s"], ppl=j["ppl"], wall=wall, cpus=j["cpu_share"], rss=rss,
                 threads=j["threads"]))
    if os.path.exists(f"{out}/llama.{r}.time"):
        log = open(f"{out}/llama.{r}.log").read() + open(f"{out}/llama.{r}.out").read()
        m = re.search(r"([\d.]+) seconds per pass", log)
        p = re.search(r"Final estimate: PPL = ([\d.]+)", log)
        wall, cpu, rss = gtime(f"{out}/llama.{r}.time")
        secs = float(m.group(1))
        rows.setdefault("llama.cpp llama-perplexity (-c 512 -b 512, one batch)", []).append(
            dict(secs=secs, tps=512 / secs, ppl=float(p.group(1)) if p else float("nan"), wall=wall,
                 cpus=cpu / wall, rss=rss))
med = {k: max(v, key=lambda x: x["tps"]) for k, v in rows.items()}      # best of RUNS
tref = med[[k for k in med if k.startswith("PyTorch") and k.endswith("(cold)")][0]]["tps"]

print(f"forward, 512 tokens of data/calib.txt, SmolLM2-135M-Instruct Q4_1, 2 threads, best of {runs} runs; "
      f"load average before: {load}\n")
print("| tool | pp512 tok/s | s | tok/s ratio vs torch (cold) | wall s (process) | CPUs | peak RSS MiB | ppl |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for k, x in med.items():
    print(f"| {k} | {x['tps']:.1f} | {x['secs']:.3f} | {x['tps'] / tref:.2f} | {x['wall']:.2f} | {x['cpus']:.2f} "
          f"| {x['rss']:.0f} | {x['ppl']:.3f} |")
lk = [k for k in med if k.startswith("llama.cpp")]
if lk:
    lt, lw = med[lk[0]]["tps"], med[lk[0]]["wall"]
    for k in med:
        if k.startswith("layermap"):
            print(f"\n- {k} vs llama.cpp: {med[k]['tps'] / lt:.2f}x the pass's tok/s, "
                  f"{lw / med[k]['wall']:.2f}x the whole process (llama.cpp's wall / layermap's)", end="")
    print()
    print("- llama.cpp's ppl is over the second half of its window only (its own rule), layermap's and torch's "
          "over every position: the ppl columns differ by definition")
print()
for k, v in rows.items():
    print(f"- {k}: " + ", ".join(f"{x['tps']:.1f} ({x['cpus']:.2f} CPUs)" for x in v) + " tok/s")
print(f"- layermap {version}")
EOF

#!/bin/sh
# bench_attr.sh -- layermap vs PyTorch: grad-weight attribution of SmolLM2-135M
# (Q4_1 GGUF) on data/calib.txt, sequences of 512 tokens, 2 threads.
#
#   bench/bench_attr.sh [N_TOKENS]       default 2048 (4 sequences, a few minutes)
#
# Environment:
#   MODEL      GGUF (default $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf;
#              fetched with scripts/fetch_models.sh when missing)
#   DATA       text file (default data/calib.txt)
#   PY         python with torch + gguf (default: the venv of scripts/ref_venv.sh, made on first use)
#   THREADS    threads for both tools (default 2)
#   RUNS       timed runs per tool (default 1); the fastest is reported and all are
#              listed (on a shared machine other jobs only ever slow a run down)
#   LAYERMAP   layermap binary to measure (default build/layermap, built with `make`
#              when out of date; a given binary is used as is)
#   MAXWAIT    seconds to wait for idle CPUs before each run (default 300; 0 = no wait)
#   OUTDIR     outputs: csv, json, logs (default bench/.cache/attr)
#   LM_EXTRA   extra layermap options measured as a second layermap row, e.g.
#              LM_EXTRA='--act-cache 1024' (keep every layer's activations)
#   OPENBLAS_CORETYPE is removed from layermap's environment so that the CLI
#              picks the CPU's best core itself (it keeps a user's choice, and a
#              stale one such as Haswell costs ~30% of attribute speed here);
#              set LM_CORETYPE=NAME to force one.
#
# Steps: build layermap if out of date (`make`), fetch the model if missing,
# tokenize DATA once with `layermap tokenize --no-bos --ids` (the PyTorch side
# reads these ids, so both see identical tokens), run
#   layermap attribute MODEL --data DATA --method grad-weight --seq-len 512
#            --max-tokens N --csv OUT -v
# and bench/torch_attr.py on the same tokens, each under /usr/bin/time -v,
# (layermap with -v: its products' profile, the share of the pass in matrix
# products and their mean rate), then bench/gemm_peak.c in the same run (the
# libraries' peak on a 2048^3 product: the mean rate's fraction of it),
# then print a markdown table and the agreement of the 30 x 7 matrices (exit
# status 3 when a layermap matrix differs from torch by more than 1e-3 relative; a
# --compute bf16 row by more than 1% of the largest cell: bf16's documented bound).
# "compute tok/s" excludes loading and dequantization for both tools (layermap
# reports its own attribution time; torch_attr.py times its loop); "wall"
# is the whole process as /usr/bin/time sees it. "CPUs" = CPU time / wall time
# (layermap: the whole process; torch: the timed loop): well below THREADS means
# something else took the CPUs during the run.
set -eu

cd "$(dirname "$0")/.."
N=${1:-2048}
CACHE=${LAYERMAP_CACHE:-$HOME/.cache/layermap}
MODEL=${MODEL:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-data/calib.txt}
[ -n "${PY:-}" ] || PY=$(scripts/ref_venv.sh)
THREADS=${THREADS:-2}
RUNS=${RUNS:-1}
MAXWAIT=${MAXWAIT:-300}
OUTDIR=${OUTDIR:-bench/.cache/attr}
SEQ=512
mkdir -p "$OUTDIR"

die() { echo "bench_attr: $*" >&2; exit 1; }

# --- 1. build --------------------------------------------------------------
LM=${LAYERMAP:-build/layermap}
if [ -n "${LAYERMAP:-}" ]; then
    [ -x "$LM" ] || die "$LM: not an executable"
elif [ ! -x build/layermap ]; then
    make >"$OUTDIR/make.log" 2>&1 || die "make failed (see $OUTDIR/make.log)"
elif ! make -q >/dev/null 2>&1; then
    make >"$OUTDIR/make.log" 2>&1 \
        || echo "bench_attr: warning: make failed (see $OUTDIR/make.log); using the existing build/layermap" >&2
fi

# --- 2. model, data, tools ------------------------------------------------------
if [ ! -f "$MODEL" ]; then
    scripts/fetch_models.sh >&2 || die "could not fetch the model"
fi
[ -f "$MODEL" ] || die "$MODEL: not found"
[ -f "$DATA" ] || die "$DATA: not found"
"$PY" -c 'import torch, gguf' 2>/dev/null || die "$PY lacks torch or gguf"
if [ ! -x /usr/bin/time ]; then
    echo "bench_attr: installing GNU time" >&2
    (apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null 2>&1; }) \
        || die "/usr/bin/time missing and apt-get install time failed"
fi

lm() {
    if [ -n "${LM_CORETYPE:-}" ]; then env OPENBLAS_CORETYPE="$LM_CORETYPE" "$@"
    else env -u OPENBLAS_CORETYPE "$@"; fi
}

# Wait until the CPUs are idle (busy < 15% over 1 s), at most MAXWAIT seconds.
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

lm "$LM" tokenize "$MODEL" -f "$DATA" --no-bos --ids >"$OUTDIR/ids.txt" \
    || die "layermap tokenize failed"
VERSION=$(lm "$LM" --version | sed -n 's/^matrix kernel: //p')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 3. runs ----------------------------------------------------------------
# lm_attr TAG [EXTRA ARGS...]: one layermap run, files $OUTDIR/TAG.$r.*
lm_attr() {
    tag=$1; shift
    wait_quiet
    lm /usr/bin/time -v -o "$OUTDIR/$tag.$r.time" "$LM" attribute "$MODEL" --data "$DATA" \
        --method grad-weight --seq-len $SEQ --max-tokens "$N" --threads "$THREADS" "$@" \
        --csv "$OUTDIR/$tag.csv" -v >/dev/null 2>"$OUTDIR/$tag.$r.log" \
        || { cat "$OUTDIR/$tag.$r.log" >&2; die "layermap attribute $* failed"; }
}
r=1
while [ "$r" -le "$RUNS" ]; do
    lm_attr layermap
    # shellcheck disable=SC2086
    [ -z "${LM_EXTRA:-}" ] || lm_attr layermap-extra $LM_EXTRA
    wait_quiet
    /usr/bin/time -v -o "$OUTDIR/torch.$r.time" "$PY" bench/torch_attr.py "$MODEL" --ids "$OUTDIR/ids.txt" \
        --seq-len $SEQ --max-tokens "$N" --threads "$THREADS" \
        --csv "$OUTDIR/torch.csv" --json "$OUTDIR/torch.$r.json" 2>"$OUTDIR/torch.$r.log" \
        || { cat "$OUTDIR/torch.$r.log" >&2; die "torch_attr.py failed"; }
    r=$((r + 1))
done

# the machine's product rates, in this run (bench/gemm_peak.c, `make build/bench/gemm_peak`)
wait_quiet
if [ -n "${LAYERMAP:-}" ] || ! make build/bench/gemm_peak >"$OUTDIR/make-peak.log" 2>&1; then
    echo "bench_attr: note: no build/bench/gemm_peak (make build/bench/gemm_peak): no product peaks" >&2
    : >"$OUTDIR/peak.txt"
else
    lm build/bench/gemm_peak "$THREADS" >"$OUTDIR/peak.txt" || die "gemm_peak failed"
fi

# --- 4. table -----------------------------------------------------------------
"$PY" - "$OUTDIR" "$RUNS" "$N" "$VERSION" "$LOAD_BEFORE" "${LM_EXTRA:-}" <<'EOF'
import json, re, sys
import numpy as np
out, runs, n, version, load, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
peak = {}
for line in open(f"{out}/peak.txt"):
    w = line.split()
    if len(w) == 3 and w[0] == "peak":
        peak[w[1]] = float(w[2])

def gtime(path):
    t = open(path).read()
    g = lambda k: re.search(re.escape(k) + r":\s*(.+)", t).group(1).strip()
    w = g("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(w)))
    cpu = float(g("User time (seconds)")) + float(g("System time (seconds)"))
    return wall, cpu, float(g("Maximum resident set size (kbytes)")) / 1024

def load_csv(path):
    return np.loadtxt(path, delimiter=",", skiprows=1)[:, 1:]

tags = [("layermap", "layermap")] + ([("layermap-extra", f"layermap {extra}")] if extra else [])
rows = {name: [] for _, name in tags}
rows["torch"] = []
for r in range(1, runs + 1):
    for tag, name in tags:
        log = open(f"{out}/{tag}.{r}.log").read()
        m = re.search(r"(\d+) tokens, (\d+) predicted, loss ([\d.]+)/token .*?, ([\d.]+) s, ([\d.]+) tokens/s", log)
        wall, cpu, rss = gtime(f"{out}/{tag}.{r}.time")
        p = re.search(r"products \((\w+)\): ([\d.]+) s of the attribution's ([\d.]+) s \(\d+%\), ([\d.e+-]+) TFLOP "
                      r"in (\d+) products", log)
        rows[name].append(dict(tokens=int(m.group(1)), secs=float(m.group(4)), tps=float(m.group(5)),
                               loss=float(m.group(3)), wall=wall, cpus=cpu / wall, rss=rss,
                               prod=(p.group(1), float(p.group(2)), float(p.group(3)), float(p.group(4))) if p else None))
    j = json.load(open(f"{out}/torch.{r}.json"))
    wall, cpu, rss = gtime(f"{out}/torch.{r}.time")
    rows["torch"].append(dict(tokens=j["tokens"], secs=j["seconds"], tps=j["tokens_per_s"],
                              loss=j["loss_per_token"], wall=wall, cpus=j["cpu_share"], rss=rss,
                              torch=j["torch"], threads=j["threads"], load_s=j["load_s"]))
best = {k: max(v, key=lambda x: x["tps"]) for k, v in rows.items()}      # best of RUNS
L, T = best["layermap"], best["torch"]

b = load_csv(f"{out}/torch.csv")
mods = open(f"{out}/torch.csv").readline().strip().split(",")[1:]
agree = True
notes = []
for tag, name in tags:
    a = load_csv(f"{out}/{tag}.csv")
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    i = np.unravel_index(rel.argmax(), rel.shape)
    # F32 against torch's F32: 1e-3 per cell; bf16 products: the README's bound, 1% of the largest cell
    bf16 = "bf16" in name
    dev = np.abs(a - b).max() / np.abs(b).max() if bf16 else rel.max()
    ok = dev <= (1e-2 if bf16 else 1e-3)
    agree &= bool(ok)
    notes.append(f"- matrix agreement, {name} vs torch: max relative difference {rel.max():.2e} (layer {i[0]}, "
                 f"{mods[i[1]]}), median {np.median(rel):.1e}; max |diff| / max |value| "
                 f"{np.abs(a - b).max() / np.abs(b).max():.1e} -> {'AGREE' if ok else 'DISAGREE'} "
                 f"({'max |diff| <= 1e-2 max |value|' if bf16 else 'tolerance 1e-3'})")

print(f"grad-weight, SmolLM2-135M-Instruct Q4_1, {L['tokens']} tokens (seq-len 512), {T['threads']} threads"
      f"{'' if runs == 1 else f', best of {runs} runs'}; load average before: {load}\n")
print("| tool | tokens | compute s | compute tok/s | tok/s ratio layermap/torch | wall s (process) | CPUs | peak RSS MiB | loss/token |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in rows:
    x = best[name]
    label = f"PyTorch {T['torch']}" if name == "torch" else name
    print(f"| {label} | {x['tokens']} | {x['secs']:.2f} | {x['tps']:.1f} | {x['tps'] / T['tps']:.2f} | {x['wall']:.2f} "
          f"| {x['cpus']:.2f} | {x['rss']:.0f} | {x['loss']:.4f} |")
print(f"\n- layermap/torch: compute tok/s {L['tps'] / T['tps']:.2f}x, whole-process wall time {L['wall'] / T['wall']:.2f}x,"
      f" peak RSS {L['rss'] / T['rss']:.2f}x; torch load + dequantize {T['load_s']:.1f} s")
print("\n".join(notes))
print(f"- layermap {version}")
for tag, name in tags:
    pr = best[name]["prod"]
    if not pr:
        continue
    kind, ps, at, tf = pr
    rate = tf * 1e3 / ps
    lib = peak.get("bf16-onednn" if kind == "bf16" else "sgemm-openblas")
    frac = f", {100 * rate / lib:.0f}% of the library's peak {lib:.0f} GFLOP/s (bench/gemm_peak.c, 2048^3, this run)" if lib else ""
    print(f"- {name}: products ({kind}) {ps:.2f} s of the attribution's {at:.2f} s ({100 * ps / at:.0f}%), "
          f"{tf * 1e3:.0f} GFLOP at a mean {rate:.0f} GFLOP/s{frac}")
if runs > 1:
    for k, v in rows.items():
        print(f"- {k} compute tok/s per run: " + ", ".join(f"{x['tps']:.1f} ({x['cpus']:.2f} CPUs)" for x in v))
sys.exit(0 if agree else 3)
EOF

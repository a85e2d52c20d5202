#!/usr/bin/env python3
"""llama.cpp prompt-processing (prefill) speed baseline for layermap's real models.

Run in the llama-cpp-python venv (see tests/ref/gen_llamacpp_ref.py for setup):

    scripts/fetch_models.sh
    /root/llamacpp-venv/bin/python bench/llamacpp_pp.py [--runs 3] [--threads 2]
        [--tokens 512] [--flash-attn] [--md bench/llamacpp_baseline.md]

Like `llama-bench -p 512 -n 0 -t 2 -b 512`: one context with n_ctx = n_batch =
n_ubatch = 512, a 512-token prompt decoded as one batch (only the last position's
logits requested), KV cache cleared between runs, one untimed warm-up, then the
median of --runs timed runs.  This 2-core machine is often shared with compiles, so
before each run it waits for the CPUs to be idle, and a run during which this
process got less than 0.9 x threads CPUs (process CPU time / wall time) is thrown
away and repeated, for at most --max-wait seconds per model; the lowest CPU share
of the kept runs is reported.  Reports tokens/s = tokens / wall seconds of decode.
The prompt is real text (the bundled data/calib.txt, tokenized and cut to 512
tokens, BOS first where the model adds one).  With --md, writes a markdown table.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("LAYERMAP_CACHE", os.path.expanduser("~/.cache/layermap"))
NOTES_MARK = "<!-- notes -->"
MODELS = [
    ("SmolLM2-135M-Instruct Q4_1", os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")),
    ("Gemma 3 270M Q4_K_M", os.path.join(CACHE, "gemma-3-270m-q4_k_m.gguf")),
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_busy(interval=0.5):
    """Fraction of all CPU time spent non-idle over `interval` seconds (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return 0.0


def wait_quiet(max_wait, threshold=0.15):
    """Wait (at most max_wait s) until other processes leave the CPUs mostly idle, so a
    concurrent compile does not halve the measurement; return the last busy fraction."""
    deadline = time.time() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.time() < deadline:
        time.sleep(2)
        busy = cpu_busy()
    return busy


def prompt_tokens(llm, n):
    with open(os.path.join(ROOT, "data", "calib.txt"), encoding="utf-8") as f:
        text = f.read()
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def bench(path, n_tok, threads, runs, flash, max_wait):
    llm = Llama(model_path=path, n_ctx=n_tok, n_batch=n_tok, n_ubatch=n_tok,
                n_threads=threads, n_threads_batch=threads, logits_all=False,
                flash_attn=flash, verbose=False)
    toks = prompt_tokens(llm, n_tok)

    def one():
        llm.reset()                      # eval() also drops the KV cache from n_tokens on
        c0, t0 = time.process_time(), time.perf_counter()
        llm.eval(toks)
        t1, c1 = time.perf_counter(), time.process_time()
        return t1 - t0, (c1 - c0) / max(1e-9, t1 - t0)

    one()                                # warm-up
    tps, shares = [], []
    deadline = time.time() + max_wait
    while len(tps) < runs:
        wait_quiet(max(0.0, deadline - time.time()))
        dt, share = one()
        # The threads of this process got `share` CPUs on average; well under `threads`
        # means another process took CPU time during the run: measure again.
        if share < 0.9 * threads and time.time() < deadline:
            continue
        tps.append(n_tok / dt)
        shares.append(share)
    return statistics.median(tps), tps, min(shares)


def main():
    ap = argparse.ArgumentParser(description="llama.cpp prompt-processing speed")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--md", help="write a markdown report here")
    ap.add_argument("--max-wait", type=float, default=300,
                    help="seconds per model to wait for runs undisturbed by other load (default 300)")
    a = ap.parse_args()
    rows = []
    load = os.getloadavg()
    for name, path in MODELS:
        if not os.path.exists(path):
            print(f"skip {name}: {path} missing (run scripts/fetch_models.sh)", file=sys.stderr)
            continue
        med, all_tps, busy = bench(path, a.tokens, a.threads, a.runs, a.flash_attn, a.max_wait)
        rows.append((name, os.path.basename(path), med, all_tps, busy))
        print(f"{name}: pp{a.tokens} {med:.1f} tok/s (runs: "
              + ", ".join(f"{x:.1f}" for x in all_tps) + f"; min CPU share {busy:.2f} of {a.threads})")
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "llama_cpp_python": llama_cpp.__version__,
        "libllama": llama_cpp.llama_version().decode()
        if callable(getattr(llama_cpp, "llama_version", None)) else "?",
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "loadavg_before": "%.2f %.2f %.2f" % load,
    }
    for k, v in info.items():
        print(f"{k}: {v}")
    if a.md and rows:
        notes = ""                       # hand-written notes after the marker survive reruns
        if os.path.exists(a.md):
            with open(a.md) as f:
                old = f.read()
            if NOTES_MARK in old:
                notes = old[old.index(NOTES_MARK):]
        with open(a.md, "w") as f:
            f.write("# llama.cpp prompt-processing baseline\n\n")
            f.write(f"Measured {datetime.date.today().isoformat()} with `bench/llamacpp_pp.py "
                    f"--tokens {a.tokens} --threads {a.threads} --runs {a.runs}"
                    + (" --flash-attn" if a.flash_attn else "") + "`: "
                    f"one {a.tokens}-token prompt decoded as a single batch (n_ctx = n_batch = "
                    f"n_ubatch = {a.tokens}), {a.threads} threads, CPU backend, flash attention "
                    f"{'on' if a.flash_attn else 'off'}, KV cache F16 (default); one warm-up run, "
                    f"median of {a.runs} timed runs.\n\n")
            f.write(f"| model | file | pp{a.tokens} tok/s (median) | runs | min CPUs used |\n"
                    "|---|---|---:|---|---:|\n")
            for name, fn, med, all_tps, busy in rows:
                f.write(f"| {name} | {fn} | {med:.1f} | "
                        + ", ".join(f"{x:.1f}" for x in all_tps) + f" | {busy:.2f} |\n")
            f.write("\n")
            f.write(f"- CPU: {info['cpu']} ({info['cores']} cores visible)\n")
            f.write(f"- llama.cpp: vendored in llama-cpp-python {info['llama_cpp_python']} "
                    f"(libllama {info['libllama']}), built from source with "
                    "`-DGGML_NATIVE=ON`, OpenMP, CPU repack on\n")
            f.write(f"- ggml features: `{info['system_info']}`\n")
            f.write(f"- load average before the run: {info['loadavg_before']}\n")
            if notes:
                f.write("\n" + notes)
        print(f"wrote {a.md}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference data from llama.cpp (via llama-cpp-python) for layermap's real-model tests.

Run in a venv with llama-cpp-python (it compiles llama.cpp from source, a few
minutes on 2 cores); that venv needs nothing else (numpy comes with it):

    python3 -m venv /root/llamacpp-venv
    CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_BLAS=OFF" \
        /root/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36
    scripts/fetch_models.sh                     # puts the GGUFs in ~/.cache/layermap
    /root/llamacpp-venv/bin/python tests/ref/gen_llamacpp_ref.py [--only NAME]

Models: $LAYERMAP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf,
$LAYERMAP_CACHE/gemma-3-270m-q4_k_m.gguf (LAYERMAP_CACHE defaults to
~/.cache/layermap) and /work/shared/models/stories260K.gguf ($STORIES260K
overrides).  A missing model is skipped with a message.

Writes tests/data/llamacpp/<gguf stem>.json with:
  meta       llama.cpp version, model metadata of interest, settings used
  tokenize   for every text of TEXTS: ids with add_special=True (llama.cpp adds
             BOS only when the GGUF's tokenizer.ggml.add_bos_token says so) and
             parse_special=False; "ids_special" (parse_special=True) only when it
             differs. For ids without BOS, drop a leading bos_id.
  passage    the text, its ids (BOS as the model says), logprob[i] = log p(ids[i+1]
             | ids[..i]) in float64 from llama.cpp's float32 logits, ppl =
             exp(-mean(logprob)) over every predicted token, argmax per position,
             and top-8 (id, logit) at a few positions for direct logit checks.
  passage_long  (gemma3 only) the passage ids twice (~800 tokens) so positions past
             the 512-token sliding window are exercised; same fields.
  llamacpp_hparams  what llama.cpp derived at load (print_info), incl. SWA layers,
             EOG tokens and tokens whose type llama.cpp overrides to CONTROL.
  greedy     3 prompts: prompt ids and 16 greedy tokens (argmax of llama.cpp's logits,
             no EOS stop, no penalties), plus the top1-top2 logit margin per step so
             a test can tolerate near-ties.

Everything runs on one sequence with n_threads=2 on the CPU backend; the KV cache
type is llama.cpp's default (F16), so small (~1e-3) logit differences against a
float32 implementation are expected.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT_DIR = os.path.join(ROOT, "tests", "data", "llamacpp")
CACHE = os.environ.get("LAYERMAP_CACHE", os.path.expanduser("~/.cache/layermap"))
N_THREADS = 2
GREEDY_STEPS = 16
TOPK_LOGITS = 8

MODELS = [
    # (name, path, kind)
    ("SmolLM2-135M-Instruct.Q4_1", os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"), "smollm2"),
    ("gemma-3-270m-q4_k_m", os.path.join(CACHE, "gemma-3-270m-q4_k_m.gguf"), "gemma3"),
    ("stories260K", os.environ.get("STORIES260K", "/work/shared/models/stories260K.gguf"), "stories"),
]

# Texts for tokenizer agreement.  Each model gets all of COMMON plus its own.
COMMON_TEXTS = [
    "",
    "a",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "   ",
    "\n",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they're here; we'll see, it's fine, don't worry. You'd've known.",
    "Café naïve résumé — déjà vu. Ångström, Straße, Øresund, façade, jalapeño.",
    "e\u0301 (combining acute) vs \u00e9 (precomposed); non\u00a0breaking\u00a0space; zero\u200bwidth.",
    "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم. שלום עולם.",
    "日本語のテキストと中文文本，还有한국어도 있습니다。",
    "東京タワーは1958年に完成した。",
    "Emoji: 😀🎉👍🏽 and 🇫🇷 flags; family 👨\u200d👩\u200d👧\u200d👦; heart ❤️.",
    "Numbers: 3.14159 2718281828459045 1,234,567.89 0x1F 1e-10 -42 +7 20240101",
    "12345678901234567890123456789",
    "Whitespace    runs     of   spaces\tand\ttabs\n\nnewlines\r\nend",
    "\t\tindented with tabs\n    indented with spaces\n\n\n\nfour newlines",
    "def f(x):\n    return x**2  # square\n\nfor i in range(10):\n\tprint(i, f(i))\n",
    "int main(void) { int a[3] = {1, 2, 3}; return a[0] != 1 ? -1 : 0; }",
    "HTTP/1.1 200 OK\nContent-Type: application/json\n\n{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "Wait... what?!?! No way!!! (really???) --- ok;;; [done] {yes} <no> ~~~ ***",
    "URL: https://example.com/path?q=a+b&x=%20#frag and e-mail someone@example.org",
    "ALL CAPS SHOUTING and MiXeD cAsE and snake_case_name and camelCaseName",
    "über ÜBER Über ﬁne ligature ½ ² ™ © ° µ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos>",
    "<table><tr><td>cell</td></tr></table> <b>bold</b>",
    "<s>[INST] hi [/INST]</s>",
]

# Passage for perplexity (written for this project; ordinary English prose).
PASSAGE = (
    "The town library stood at the corner of two quiet streets, and for most of the year it "
    "was the warmest building in the neighbourhood. In winter the radiators ticked and hissed "
    "under the tall windows, and people who had nowhere in particular to be would come in to "
    "read the newspapers or simply to sit for an hour. The librarian, a patient woman named "
    "Margaret, knew most of them by name. She knew which ones wanted to talk and which ones "
    "wanted to be left alone, and she had a talent for recommending exactly the right book at "
    "exactly the right moment.\n\n"
    "One afternoon a boy of about twelve came in with a wet umbrella and a question. He wanted "
    "to know how bridges stayed up. His teacher had explained that the weight was carried down "
    "into the ground, but he could not understand how a long, thin deck could hold a line of "
    "heavy trucks without bending in the middle. Margaret thought for a moment, then led him to "
    "a shelf near the back where the engineering books were kept. Together they found a book "
    "with clear drawings of arches, beams and suspension cables.\n\n"
    "An arch, the book explained, turns the downward push of a load into a sideways push that "
    "travels along the curve until it reaches the ground. A beam resists bending because its "
    "top is squeezed while its bottom is stretched. A suspension bridge hangs its deck from "
    "cables, and the cables pull on towers and anchors that are buried deep in rock. The boy read "
    "slowly, tracing the arrows with his finger. When he looked up, he said that it was like a "
    "game of passing the weight from one piece to the next until nothing was left to carry it "
    "but the earth itself.\n\n"
    "Margaret smiled and told him that this was a better explanation than many she had heard "
    "from grown engineers. He borrowed the book, promised to return it in two weeks, and walked "
    "back out into the rain. The next month he came back with a model bridge made of paper "
    "straws and glue, and it held a full bottle of water without sagging at all."
)

# stories260K was trained on TinyStories and has a 512-token context: a short simple story.
STORIES_PASSAGE = (
    "Once upon a time, there was a little girl named Lily. She loved to play in the park with "
    "her dog, Max. One day, Lily saw a big red ball under a tree. She ran to the ball and kicked "
    "it. The ball went very high and landed in the pond. Lily was sad. Max looked at Lily and "
    "jumped into the water. He swam to the ball and brought it back. Lily was very happy. She "
    "hugged Max and said, \"Thank you, Max! You are a good dog.\" Then they played with the ball "
    "until the sun went down. When it was time to go home, Lily and Max walked back together. "
    "Mom made soup for dinner, and Lily told her about the ball and the pond."
)

GREEDY_PROMPTS = {
    "smollm2": [
        ("plain", "The capital of France is", False),
        ("story", "Once upon a time, there was a little", False),
        ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                 "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the largest planet in the "
                 "solar system?<|im_end|>\n<|im_start|>assistant\n", True),
    ],
    "gemma3": [
        ("plain", "The capital of France is", False),
        ("story", "Once upon a time, there was a little", False),
        ("chat", "<start_of_turn>user\nWhat is the largest planet in the solar system?"
                 "<end_of_turn>\n<start_of_turn>model\n", True),
    ],
    "stories": [
        ("plain", "Once upon a time", False),
        ("story", "Lily and Tom went to the park. They saw a", False),
        ("dialog", "Mom said, \"", False),
    ],
}


def log_softmax64(row):
    x = row.astype(np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def tokenize_set(llm, texts):
    out = []
    for t in texts:
        b = t.encode("utf-8")
        ids = llm.tokenize(b, add_bos=True, special=False)
        ids_sp = llm.tokenize(b, add_bos=True, special=True)
        e = {"text": t, "ids": ids}
        if ids_sp != ids:
            e["ids_special"] = ids_sp
        out.append(e)
    return out


def score_sequence(llm, ids):
    """Evaluate ids in one sequence; return per-token logprobs of the actual next tokens."""
    llm.reset()
    llm.eval(ids)
    n = len(ids)
    logits = np.asarray(llm.scores[:n], dtype=np.float32)
    lp, amax = [], []
    for i in range(n):
        if i + 1 < n:
            lp.append(float(log_softmax64(logits[i])[ids[i + 1]]))
        amax.append(int(np.argmax(logits[i])))
    probe = sorted({0, 1, n // 2, n - 2, n - 1} & set(range(n)))
    top = []
    for p in probe:
        order = np.argsort(-logits[p], kind="stable")[:TOPK_LOGITS]
        top.append({"pos": p, "ids": [int(i) for i in order],
                    "logits": [float(np.float32(logits[p][i])) for i in order]})
    nll = -sum(lp) / len(lp)
    return {
        "ids": list(ids),
        "n_tokens": n,
        "n_predicted": len(lp),
        "logprob": [round(v, 6) for v in lp],
        "argmax": amax,
        "mean_nll": nll,
        "ppl": math.exp(nll),
        "top_logits": top,
    }


def greedy(llm, prompt_ids, steps):
    llm.reset()
    llm.eval(prompt_ids)
    out, margins = [], []
    for _ in range(steps):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        order = np.argsort(-row, kind="stable")[:2]
        tok = int(order[0])
        out.append(tok)
        margins.append(round(float(row[order[0]] - row[order[1]]), 5))
        llm.eval([tok])
    return out, margins


def model_meta(llm):
    md = llm.metadata
    keep = {}
    for k, v in md.items():
        if k.startswith("tokenizer.chat_template"):
            keep[k] = "<%d chars>" % len(v)
        elif k.startswith(("general.", "tokenizer.")) or "." in k:
            keep[k] = v
    return keep


def derived_hparams(path):
    """Hyper-parameters as llama.cpp derives them (some are not in the GGUF, e.g.
    gemma3's SWA layer pattern and SWA rope base): load the model verbosely in a
    child process and parse its print_info / load_tensors lines."""
    code = ("import sys; from llama_cpp import Llama; "
            "Llama(sys.argv[1], n_ctx=256, verbose=True)")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    log = r.stdout + r.stderr
    keys = ["n_ctx_train", "n_embd", "n_layer", "n_head", "n_head_kv", "n_rot", "n_swa",
            "is_swa_any", "n_embd_head_k", "n_embd_head_v", "n_gqa", "f_norm_rms_eps",
            "f_attn_scale", "f_logit_scale", "n_ff", "rope type", "rope scaling",
            "freq_base_train", "freq_scale_train", "freq_base_swa", "n_rot_swa",
            "vocab type", "n_merges", "model type"]
    out = {}
    for line in log.splitlines():
        m = re.match(r"print_info: (.+?)\s+= (.*)$", line)
        if m and m.group(1).strip() in keys and m.group(1).strip() not in out:
            out[m.group(1).strip()] = m.group(2).strip()
    swa = [int(m.group(1)) for m in re.finditer(r"layer\s+(\d+) assigned to device \S+, is_swa = 1", log)]
    out["swa_layers"] = swa
    out["eog_tokens"] = re.findall(r"EOG token\s+= (\d+ '.*?')", log)
    out["overridden_to_control"] = re.findall(r"control-looking token:\s+(\d+ '.*?')", log)
    return out


def run_model(name, path, kind):
    if not os.path.exists(path):
        print(f"skip {name}: {path} not found (run scripts/fetch_models.sh)", file=sys.stderr)
        return None
    voc = Llama(model_path=path, vocab_only=True, verbose=False)
    meta = model_meta(voc)
    n_ctx_train = int(voc.n_ctx_train()) if hasattr(voc, "n_ctx_train") else None
    texts = tokenize_set(voc, COMMON_TEXTS)
    passage_text = STORIES_PASSAGE if kind == "stories" else PASSAGE
    passage_ids = voc.tokenize(passage_text.encode(), add_bos=True, special=False)
    truncated = False
    if n_ctx_train and len(passage_ids) > n_ctx_train:
        passage_ids = passage_ids[:n_ctx_train]
        truncated = True
    bos_added = len(passage_ids) > 0 and passage_ids[0] == voc.token_bos() and \
        meta.get("tokenizer.ggml.add_bos_token", "true") == "true"
    prompts = []
    for pname, ptext, special in GREEDY_PROMPTS[kind]:
        prompts.append((pname, ptext, special,
                        voc.tokenize(ptext.encode(), add_bos=True, special=special)))
    del voc

    long_ids = None
    if kind == "gemma3":
        body = passage_ids[1:] if bos_added else passage_ids
        long_ids = passage_ids + body
    n_ctx = max(len(passage_ids), len(long_ids or [])) + 64
    n_ctx = min(((n_ctx + 255) // 256) * 256, n_ctx_train or 1 << 30)
    n_batch = 512
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=N_THREADS, n_threads_batch=N_THREADS, logits_all=True,
                seed=0, verbose=False)
    cp = llm.context_params
    settings = {
        "n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": n_batch,
        "n_threads": N_THREADS, "n_threads_batch": N_THREADS, "logits_all": True,
        "n_gpu_layers": 0, "backend": "CPU",
        "type_k": int(cp.type_k), "type_v": int(cp.type_v),  # ggml_type: 1 = F16
        "flash_attn_type": int(getattr(cp, "flash_attn_type", -99)),
        "swa_full": bool(getattr(cp, "swa_full", False)),
        "rope_freq_base_override": float(cp.rope_freq_base),
        "n_seq": 1,
        "tokenize_call": "Llama.tokenize(text.encode(), add_bos=True, special=False|True); "
                         "add_bos=True means add_special: llama.cpp adds BOS only if the "
                         "GGUF says add_bos_token",
        "greedy": "argmax of raw logits, no sampler, no penalties, no EOS stop",
    }
    res = {
        "model": name,
        "gguf": os.path.basename(path),
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_version": llama_cpp.llama_version().decode()
        if callable(getattr(llama_cpp, "llama_version", None)) else None,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "settings": settings,
        "n_vocab": int(llm.n_vocab()),
        "n_ctx_train": n_ctx_train,
        "bos_id": int(llm.token_bos()),
        "eos_id": int(llm.token_eos()),
        "add_bos": bool(bos_added),
        "metadata": meta,
        "llamacpp_hparams": derived_hparams(path),
        "tokenize": texts,
    }
    p = score_sequence(llm, passage_ids)
    p = {"text": passage_text, "truncated_to_n_ctx_train": truncated, **p}
    res["passage"] = p
    print(f"{name}: passage {p['n_tokens']} tokens, ppl {p['ppl']:.4f}", file=sys.stderr)
    if long_ids is not None:
        q = score_sequence(llm, long_ids)
        q = {"construction": "passage.ids + passage.ids[1:] (second copy without BOS)", **q}
        del q["ids"]
        res["passage_long"] = q
        print(f"{name}: long passage {q['n_tokens']} tokens, ppl {q['ppl']:.4f}", file=sys.stderr)
    g = []
    for pname, ptext, special, pids in prompts:
        toks, margins = greedy(llm, pids, GREEDY_STEPS)
        g.append({"name": pname, "prompt": ptext, "parse_special": special,
                  "prompt_ids": pids, "greedy_ids": toks, "top1_top2_margin": margins,
                  "text": llm.detokenize(toks).decode("utf-8", "replace")})
        print(f"{name}: greedy {pname}: {g[-1]['text']!r}", file=sys.stderr)
    res["greedy"] = g
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="model name substring")
    ap.add_argument("--out", default=OUT_DIR)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name, path, kind in MODELS:
        if a.only and a.only not in name:
            continue
        res = run_model(name, path, kind)
        if res is None:
            continue
        fn = os.path.join(a.out, name + ".json")
        with open(fn, "w", encoding="utf-8") as f:
            json.dump(res, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {fn} ({os.path.getsize(fn)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

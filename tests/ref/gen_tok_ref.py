#!/usr/bin/env python3
"""Reference token ids for tests/test_tokenizer.c.

Writes tests/data/tok/:
  ref.json        the text set and, per tokenizer, the ids the HF `tokenizers`
                  package gives (add_special_tokens=False), plus the ids of
                  llama2.c's encoder (a port of run.c's encode()) for stories260K.
  tiny-*.json     small BPE tokenizers trained here to exercise pipelines the
                  two real tokenizers do not use (Llama 3 split regex, Metaspace,
                  NFKC/Lowercase/Strip normalizers, Split behaviours, Punctuation,
                  Whitespace, unk), each listed in ref.json with its ids.

Run from the repository root with the reference venv:
    $(scripts/ref_venv.sh) tests/ref/gen_tok_ref.py [MODELS_DIR]
MODELS_DIR defaults to ../shared/models. Needs: pip install tokenizers.
The C tests need only the files written here, not Python.
"""
import json
import os
import random
import struct
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

MODELS = sys.argv[1] if len(sys.argv) > 1 else "../shared/models"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tok")

# Texts every tokenizer must encode like HF. None of them holds a special token
# (those are in SPECIAL_TEXTS) so llama2.c's encoder applies to all of them.
TEXTS = [
    "",
    " ",
    "Hello",
    "Hello world",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    "The quick brown fox jumps over the lazy dog!",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "multiple    spaces   between     words",
    "tabs\tand\ttabs\t\t\tend",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\nends",
    "\n\n\n",
    "\t \n \t",
    "café naïve résumé façade Ångström",
    "Ünïcödé äccents: àéîõü ÀÉÎÕÜ ñ ç ß ø å æ œ",
    "日本語のテキストです。東京は大きい。",
    "中文文本测试，你好世界！",
    "한국어 텍스트 안녕하세요",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "mixed scripts: English, русский текст, ελληνικά, עברית, العربية, हिन्दी",
    "digits 0 1 2 3 4 5 6 7 8 9",
    "numbers 42 and 3.14159 and 1,000,000 and -17",
    "a long number 12345678901234567890123456789 end",
    "year 2024, phone +1-555-0100, version v1.2.3",
    "int main(void) { return 0; }",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "punctuation!!! ??? ... ,,, ;;; ::: --- ___ *** ### @@@",
    "quotes \"double\" 'single' `back` «guillemets» „low“",
    "contractions: I'm you're he's she'll we've they'd can't won't DON'T I'M",
    "URL https://example.com/path?query=1&x=y#frag and mail a.b@c.de",
    "math: ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ ± × ÷ π",
    "symbols: © ® ™ § ¶ † ‡ • … ‰ € £ ¥",
    "non-breaking\u00a0space and ideographic\u3000space",
    "zero\u200bwidth and soft\u00adhyphen",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed)",
    "fullwidth: ＡＢＣ１２３ and ligature ﬁ ﬂ",
    "ALL CAPS SENTENCE WITH SOME WORDS",
    "MiXeD CaSe WoRdS",
    "x",
    "!",
    "\u2581 already a space mark \u2581\u2581",
    "She said, \"Tim, let's go to the park!\" and they went.",
    "Lily and Ben were friends. They liked to play with their toys.",
    "The little dog was very happy. He wagged his tail and ran around.",
]

SPECIAL_TEXTS = {
    "stories260K": ["<s>Hello</s>", "a<s>b", "<unk>", " <s> x </s> ", "<s><s>", "text </s"],
    "smollm2": [
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>",
        "a<|endoftext|>b",
        "<|im_start|><|im_end|>",
        "<|im_start almost special",
        "<file_sep>code<filename>x.py",
    ],
}

CORPUS = """Once upon a time there was a little girl named Lily. She liked to play in the park with her friend Ben.
One day they found a big red ball under a tree. "Can we play with it?" asked Ben. "Yes, let's play!" said Lily.
They kicked the ball and laughed. The sun was warm and the birds were singing. In 2023 they played 365 days.
The quick brown fox jumps over the lazy dog. Numbers like 1234567 and 3.14159 appear here and there.
def add(a, b):\n    return a + b\n\nprint(add(1, 2))  # 3
Café, naïve, résumé: accents are everywhere. ＦＵＬＬＷＩＤＴＨ text and ligatures like ﬁnd.
"""


def fuzz_texts(n=80, seed=1234):
    """Random short strings over an alphabet of letters, digits, whitespace,
    punctuation, accents, CJK, emoji, combining marks, U+2581 and pieces of
    special tokens (so that cut-out specials meet every pipeline stage)."""
    rng = random.Random(seed)
    alph = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            + list(" \t\n\r  .,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`")
            + list("éèàüöñçßøåÆŒ日本語中文한국어😀👍🏽\u200d❤️\u00a0\u3000\u2581\u0301²½ⅣＡ")
            + ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>",
               "<|mask|>", "hello world", "'s", "'LL", " the", "\n\n", "   ", "123456"])
    return ["".join(rng.choice(alph) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def llama2c_encode(path, text):
    """Port of llama2.c run.c encode() (no BOS/EOS): dummy prefix, per-char
    lookup with byte fallback (+3), then greedy best-score merges."""
    with open(path, "rb") as f:
        data = f.read()
    off = 4
    vocab, scores = [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        vocab.append(data[off:off + n])
        off += n
        scores.append(score)
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)
    toks = []
    if text:
        toks.append(lookup[b" "])
    raw = text.encode("utf-8")
    i = 0
    while i < len(raw):
        c = raw[i]
        n = 1 if c < 0x80 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4
        ch = raw[i:i + n]
        if ch in lookup:
            toks.append(lookup[ch])
        else:
            toks.extend(b + 3 for b in ch)
        i += n
    while True:
        best, best_id, best_i = -1e10, -1, -1
        for k in range(len(toks) - 1):
            s = vocab[toks[k]] + vocab[toks[k + 1]]
            if s in lookup and scores[lookup[s]] > best:
                best, best_id, best_i = scores[lookup[s]], lookup[s], k
        if best_i < 0:
            break
        toks[best_i:best_i + 2] = [best_id]
    return toks


def tiny_tokenizers():
    """Small tokenizers trained on CORPUS + TEXTS, one per pipeline feature."""
    corpus = CORPUS.split("\n") + TEXTS
    out = {}

    # Llama 3 style: Split(regex, Isolated) + ByteLevel(no regex), ignore_merges, BOS template
    t = Tokenizer(models.BPE(ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(corpus, tr)
    t.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    # an added token that swallows the whitespace around it, and a non-special one
    t.add_special_tokens([AddedToken("<|mask|>", lstrip=True, rstrip=True, special=True, normalized=False)])
    t.add_tokens([AddedToken("hello world", special=False, normalized=False)])
    out["tiny-llama3"] = t

    # Qwen2 style: the same with single digits (tests GGUF pre "qwen2" too)
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(corpus, tr)
    out["tiny-qwen2"] = t

    # Metaspace (prepend first, split) + NFKC, unk with fuse_unk
    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    t.train_from_iterator(CORPUS.split("\n"), tr)  # no CJK/emoji: they become <unk>
    out["tiny-metaspace"] = t

    # Normalizers (NFD, Lowercase, Strip, Replace regex) + Whitespace pre-tokenizer
    t = Tokenizer(models.BPE(unk_token="[UNK]"))
    t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.Strip(),
                                         normalizers.Replace(Regex(r"[0-9]+"), "#")])
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False)
    t.train_from_iterator(corpus, tr)
    out["tiny-whitespace"] = t

    # Split behaviours: literal MergedWithPrevious, Digits contiguous, Punctuation contiguous,
    # regex invert Removed... then ByteLevel so that nothing is unknown
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_previous"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\n+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"x+"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
    ])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=350, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(corpus, tr)
    out["tiny-splits"] = t
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    fuzz = fuzz_texts()
    ref = {"texts": TEXTS, "fuzz_texts": fuzz, "tokenizers": {}}
    stories = Tokenizer.from_file(os.path.join(MODELS, "stories260K-hf", "tokenizer.json"))
    smol = Tokenizer.from_file(os.path.join(MODELS, "smollm2-135m-tokenizer", "tokenizer.json"))
    real = {"stories260K": stories, "smollm2": smol}
    for name, tok in real.items():
        ref["tokenizers"][name] = {
            "ids": [tok.encode(x, add_special_tokens=False).ids for x in TEXTS],
            "special_texts": SPECIAL_TEXTS[name],
            "special_ids": [tok.encode(x, add_special_tokens=False).ids for x in SPECIAL_TEXTS[name]],
            "fuzz_ids": [tok.encode(x, add_special_tokens=False).ids for x in fuzz],
        }
    # Gemma-style SPM without the space prefix (GGUF tokenizer.ggml.add_space_prefix
    # = false): the stories260K tokenizer.json without its Prepend normalizer
    with open(os.path.join(MODELS, "stories260K-hf", "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    j["normalizer"]["normalizers"] = [n for n in j["normalizer"]["normalizers"] if n["type"] != "Prepend"]
    nopre = Tokenizer.from_str(json.dumps(j))
    ref["tokenizers"]["stories260K_noprefix"] = {
        "ids": [nopre.encode(x, add_special_tokens=False).ids for x in TEXTS],
        "fuzz_ids": [nopre.encode(x, add_special_tokens=False).ids for x in fuzz]}

    # llama2.c's encoder must agree with HF on stories260K; it is left out (null)
    # for text holding U+2581 itself, which llama2.c's vocabulary (spaces, not
    # U+2581) cannot see as a space while HF and llama.cpp do
    l2c = [None if "\u2581" in x else llama2c_encode(os.path.join(MODELS, "stories260K", "tok512.bin"), x)
           for x in TEXTS]
    bad = [i for i, (a, b) in enumerate(zip(l2c, ref["tokenizers"]["stories260K"]["ids"])) if a is not None and a != b]
    if bad:
        sys.exit("llama2.c encoder and HF disagree on texts %s" % bad)
    ref["llama2c_stories260K"] = l2c

    for name, tok in tiny_tokenizers().items():
        tok.save(os.path.join(OUT, name + ".json"), pretty=False)
        tok = Tokenizer.from_file(os.path.join(OUT, name + ".json"))
        ref["tokenizers"][name] = {
            "ids": [tok.encode(x, add_special_tokens=False).ids for x in TEXTS],
            "ids_bos": [tok.encode(x).ids for x in TEXTS[:4]],
            "decoded": [tok.decode(tok.encode(x, add_special_tokens=False).ids) for x in TEXTS],
            "fuzz_ids": [tok.encode(x, add_special_tokens=False).ids for x in fuzz],
        }
    with open(os.path.join(OUT, "ref.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
    n = sum(len(v["ids"]) + len(v["fuzz_ids"]) for v in ref["tokenizers"].values())
    print("wrote %s: %d texts + %d random ones x %d tokenizers (%d encodings), llama2.c == HF on stories260K"
          % (os.path.normpath(OUT), len(TEXTS), len(fuzz), len(ref["tokenizers"]), n))


if __name__ == "__main__":
    main()

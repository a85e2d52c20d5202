/*
 * tokenizer.h -- the tokenizer's private structures, shared by
 * tokenizer.c (pipeline, decode, API), tok_bpe.c (merge engine, hash maps)
 * and tok_load.c (construction from GGUF metadata or a tokenizer.json).
 *
 * One engine serves both families of llama-style tokenizers:
 *   TOK_MODEL_SPM  SentencePiece-style BPE as llama.cpp's "llama" vocab runs it:
 *                  the pair whose concatenation is a vocab entry with the highest
 *                  score merges first; leftover characters become <0xXX> tokens.
 *   TOK_MODEL_BPE  ranked merges (HF "BPE" model, GGUF "gpt2"): the pair with the
 *                  lowest merge rank merges first; optional byte fallback and
 *                  GPT-2 byte-level mapping of the input.
 * Before the model runs, the text goes through the same stages as in HF
 * tokenizers: added/special tokens are cut out, each remaining segment is
 * normalized (tok_norm ops), split into pieces (tok_pre ops), and each piece is
 * encoded on its own.
 */
#ifndef LM_TOKENIZER_INTERNAL_H
#define LM_TOKENIZER_INTERNAL_H

#include "format/gguf.h"
#include "base/base.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Token attributes: the GGUF token_type values. */
enum {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3, /* BOS, EOS, <|im_start|>: decodes to nothing */
    TOK_USER = 4,    /* user-defined / non-special added token: decodes to its text */
    TOK_UNUSED = 5,
    TOK_BYTE = 6     /* <0xXX> */
};

enum { TOK_MODEL_SPM = 0, TOK_MODEL_BPE = 1 };

/* Vocabulary: pieces in one arena plus an open-addressing hash (string -> id). */
typedef struct tok_vocab {
    int n;             /* number of ids */
    char *arena;       /* every piece, each NUL-terminated */
    size_t arena_len, arena_cap;
    uint32_t *off;     /* [n] piece i = arena + off[i] */
    uint32_t *len;     /* [n] bytes, without the NUL */
    float *score;      /* [n] SPM scores (0 when absent) */
    uint8_t *type;     /* [n] TOK_* */
    uint32_t *slot;    /* [mask+1] 0 = empty, else id + 1 */
    uint32_t mask;
} tok_vocab;

/* Merge table: (left id, right id) -> (rank, merged id). */
typedef struct tok_merges {
    uint64_t *key;     /* [mask+1] (a << 32 | b), UINT64_MAX = empty */
    int32_t *rank;
    int32_t *val;
    uint32_t mask;
    int n;
} tok_merges;

/* Normalizer steps (HF "normalizer"), applied in order to each segment. */
enum { NORM_PREPEND, NORM_REPLACE, NORM_REPLACE_RE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD,
       NORM_LOWER, NORM_STRIP };
typedef struct tok_norm {
    int kind;
    char *a;           /* PREPEND: text; REPLACE: pattern */
    size_t alen;
    char *b;           /* REPLACE: replacement */
    size_t blen;
    pcre2_code *re;    /* REPLACE_RE */
    int left, right;   /* STRIP */
} tok_norm;

/* Pre-tokenizer steps (HF "pre_tokenizer", llama.cpp regex lists). */
enum { PRE_SPLIT, PRE_PREFIX_SPACE, PRE_METASPACE };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
typedef struct tok_pre {
    int kind;
    pcre2_code *re;    /* SPLIT */
    int behavior;      /* SPLIT_* */
    int invert;
    char repl[8];      /* METASPACE: replacement character (UTF-8) */
    int repl_len;
    int prepend;       /* METASPACE: 0 never, 1 first piece of the text, 2 always */
} tok_pre;

/* An added/special token matched in the raw text before anything else. */
typedef struct tok_special {
    int32_t id;
    uint32_t len;           /* bytes of its text */
    uint8_t first;          /* its first byte */
    uint8_t lstrip, rstrip; /* swallow whitespace on that side (HF added_tokens) */
} tok_special;

struct lm_tokenizer {
    char *path;            /* file it came from, for messages */
    int model;             /* TOK_MODEL_* */
    tok_vocab v;
    tok_merges m;          /* TOK_MODEL_BPE */
    int byte_fallback;     /* unknown characters -> <0xXX> tokens */
    int32_t byte_id[256];  /* id of <0xXX>, -1 when absent */
    int unk_id;            /* -1 when none */
    int fuse_unk;
    int ignore_merges;     /* a piece that is a whole vocab entry is emitted as is */
    int byte_level;        /* GPT-2 bytes_to_unicode mapping of each piece */
    char b2u[256][2];      /* byte -> its code point in UTF-8 (1 or 2 bytes) */
    uint8_t b2u_len[256];
    int16_t u2b[512];      /* code point (< 512) -> byte, -1 if none */
    int newline_barrier;   /* SPM: no multi-character piece holds '\n', so merges never cross one */
    tok_norm *norm;
    int n_norm;
    tok_pre *pre;
    int n_pre;
    tok_special *special;  /* sorted by first byte, then longer first */
    int n_special;
    int special_first[257];/* special[special_first[c] .. special_first[c+1]) start with byte c */
    int bos, eos, add_bos;
    /* decoding */
    int dec_byte_level;    /* undo the byte-level mapping */
    int dec_space_mark;    /* U+2581 -> ' ' */
    int dec_strip_lead;    /* drop one leading space of the decoded text */
    int dec_join_space;    /* tokens joined by ' ' (HF without a decoder) */
    pcre2_general_context *gctx; /* routes PCRE2 allocations through lm_malloc */
};

/* ---- tokenizer.c -------------------------------------------------------- */

/* lm_tokenize with flags: TOK_CONTINUE marks text that continues earlier text
 * (a completion after its prompt): no SPM space prefix / Metaspace / ByteLevel
 * prefix space is added at its start. */
#define TOK_CONTINUE 1
int lm_tokenize_ex(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int flags,
                   int32_t **ids, int *n, lm_err *err);

/* Unicode White_Space (what HF's char::is_whitespace accepts). */
int tok_is_space(uint32_t cp);

/* ---- tok_load.c --------------------------------------------------------- */

/* Build a tokenizer from the metadata of an open GGUF file (tokenizer.ggml.*). */
int lm_tokenizer_from_gguf(lm_tokenizer **out, const lm_gguf *g, lm_err *err);

/* ---- tok_bpe.c ---------------------------------------------------------- */

/* Vocabulary building: reserve n ids (pieces empty, type UNUSED), then set each. */
int tok_vocab_init(tok_vocab *v, int n);
int tok_vocab_set(tok_vocab *v, int id, const char *s, size_t len, float score, int type);
/* Build the hash after every piece is set; the first id wins for duplicates. */
int tok_vocab_index(tok_vocab *v);
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len); /* -1 if absent */
void tok_vocab_free(tok_vocab *v);

int tok_merges_init(tok_merges *m, int n);
/* Add (a, b) -> merged with the next rank; the first rank wins for duplicates. */
void tok_merges_add(tok_merges *m, int32_t a, int32_t b, int32_t merged);
void tok_merges_free(tok_merges *m);

/* GPT-2 bytes_to_unicode: byte b is the code point tok_byte_cp(b) (< 512). */
uint32_t tok_byte_cp(int b);

/* Scratch space of one encode call, reused across pieces. */
typedef struct tok_sym {
    uint32_t start, len; /* bytes of the piece */
    int32_t prev, next;
    int32_t id;          /* -1: no single token (SPM: resolved at the end) */
    int32_t nomerge;     /* byte-fallback / unk symbols never merge */
} tok_sym;
typedef struct tok_pair {
    double pri;          /* lower merges first: rank, or -score */
    int32_t left, right;
    uint32_t size;
    int32_t id;          /* merged token */
} tok_pair;
typedef struct tok_scratch {
    tok_sym *sym;
    size_t sym_cap;
    tok_pair *heap;
    size_t heap_n, heap_cap;
} tok_scratch;
void tok_scratch_free(tok_scratch *s);

/* Growable id list. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *ids, int32_t id);

/* Encode one piece (already byte-level mapped when the tokenizer is) and
 * append its ids. LM_ENOMEM is the only failure. */
int tok_bpe_piece(const lm_tokenizer *t, tok_scratch *s, const char *p, size_t n, tok_ids *out);

#endif

/*
 * layermap.h -- public API of liblayermap.
 *
 * layermap tells where in a transformer LLM something happens: it computes a
 * layers x modules attribution matrix over the seven linear modules of a
 * Llama-family block and draws it as a heatmap.
 *
 * The library never prints and never exits. Every fallible call returns an
 * LM_* code (0 = LM_OK) and, on failure, fills an lm_err with a one-line
 * message that names the file and the problem. Only the CLI prints.
 *
 * Layers of the library, bottom to top, one folder of src/ each (docs/DESIGN.md;
 * scripts/check_layers.sh keeps a file to its own or lower layers' headers):
 *   base     errors, allocation (fault injection), files, atomic output, JSON, UTF-8
 *   format   gguf.c, safetensors.c
 *   model    config.c, model.c (lm_model), dequant.c (lm_tensor_read_rows)
 *   text     tokenizers, datasets (data.c)
 *   compute  backend.h (the interface a pass runs through) + backend_cpu.c, kernels.c, linalg.c; engine.c
 *   method   attribute.c (from data), diff.c (two checkpoints), lora.c, recipe.c
 *   output   matrix.c (lm_matrix, csv/json/terminal), scale.c (quantities, colour
 *            scale), plot.c (cairo PNG/PDF, own SVG), compare.c, report.c
 * The CLI (cli/) and the Python package (python/) are thin layers over this header.
 */
#ifndef LAYERMAP_H
#define LAYERMAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LM_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

enum {
    LM_OK = 0,
    LM_EIO = 1,          /* cannot open/read/write a file */
    LM_ECORRUPT = 2,     /* malformed or truncated file */
    LM_EUNSUPPORTED = 3, /* valid input that layermap does not handle (arch, dtype) */
    LM_ENOMEM = 4,       /* allocation failed */
    LM_EARG = 5,         /* bad argument / option from the caller */
    LM_ESHAPE = 6,       /* shapes or architectures that do not match */
    LM_EENCODING = 7,    /* text that is not valid UTF-8 / not tokenizable */
    LM_EINTERNAL = 8,    /* a bug: an invariant of layermap itself failed */
    LM_ECANCELED = 9     /* stopped by the caller (lm_attr_opts.cancel); the checkpoint, if any, is saved */
};

typedef struct lm_err {
    int code;       /* LM_* */
    char msg[1024]; /* one line, no trailing newline, e.g. "x.gguf: tensor 'blk.0.attn_q.weight': data past end of file" */
} lm_err;

const char *lm_strerror(int code);

/* Progress callback: done/total in arbitrary units (bytes, tokens). 'what' is
 * a short label ("diff", "attribute"). Called from the calling thread only. */
typedef void (*lm_progress_fn)(void *ctx, double done, double total, const char *what);

/* ------------------------------------------------------------------------ */
/* Modules                                                                   */
/* ------------------------------------------------------------------------ */

#define LM_N_MODULES 7
typedef enum {
    LM_MOD_Q = 0, /* attn.q   (n_head*head_dim, dim)    */
    LM_MOD_K,     /* attn.k   (n_kv_head*head_dim, dim) */
    LM_MOD_V,     /* attn.v   (n_kv_head*head_dim, dim) */
    LM_MOD_O,     /* attn.o   (dim, n_head*head_dim)    */
    LM_MOD_UP,    /* mlp.up   (ffn_dim, dim)            */
    LM_MOD_DOWN,  /* mlp.down (dim, ffn_dim)            */
    LM_MOD_GATE   /* mlp.gate (ffn_dim, dim)            */
} lm_module;

/* "attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate" */
extern const char *const lm_module_names[LM_N_MODULES];

/* ------------------------------------------------------------------------ */
/* Tensors and dtypes                                                        */
/* ------------------------------------------------------------------------ */

typedef enum {
    LM_DT_F32 = 0,
    LM_DT_F16,
    LM_DT_BF16,
    LM_DT_Q4_0,
    LM_DT_Q4_1,
    LM_DT_Q5_0,
    LM_DT_Q5_1,
    LM_DT_Q8_0,
    LM_DT_Q2_K,
    LM_DT_Q3_K,
    LM_DT_Q4_K,
    LM_DT_Q5_K,
    LM_DT_Q6_K,
    LM_DT_IQ4_NL,
    LM_DT_IQ4_XS,
    LM_DT_COUNT
} lm_dtype;

const char *lm_dtype_name(lm_dtype t); /* "F32", "Q4_K", ... */
int lm_dtype_block_elems(lm_dtype t);  /* elements per block (1 for F32/F16/BF16) */
size_t lm_dtype_block_bytes(lm_dtype t);

/* A tensor is a read-only view into a memory-mapped file. Shapes are in
 * PyTorch order: shape[0] is the number of rows (output features),
 * shape[ndim-1] the number of columns (input features, the contiguous axis).
 * A 1-D tensor has one row. */
typedef struct lm_tensor {
    char name[128];      /* name as stored in the file */
    lm_dtype dtype;
    int ndim;            /* 1..4 */
    int64_t shape[4];
    const uint8_t *data; /* first byte, inside the mapping */
    size_t nbytes;
    const char *path;    /* file the tensor lives in (for messages) */
    /* >0: rows are stored in GGUF/Meta RoPE order (interleaved pairs) with
     * this many heads; lm_tensor_read_rows un-permutes them so that every
     * consumer sees the HF (rotate-half) convention. */
    int qk_perm_heads;
    /* The file's own name for the element type ("Q4_K", "IQ2_XXS"), for
     * messages; a tensor of a type layermap cannot decode has dtype
     * LM_DT_COUNT and lm_tensor_read_rows fails naming this. */
    char file_type[16];
} lm_tensor;

int64_t lm_tensor_nelem(const lm_tensor *t);
int64_t lm_tensor_cols(const lm_tensor *t); /* shape[ndim-1] */
int64_t lm_tensor_rows(const lm_tensor *t); /* nelem / cols */

/* Dequantize rows [row0, row0+nrows) to F32 into out (nrows x cols, row-major),
 * in HF row order (see qk_perm_heads). Thread-safe (reads only). */
int lm_tensor_read_rows(const lm_tensor *t, int64_t row0, int64_t nrows, float *out, lm_err *err);

/* ------------------------------------------------------------------------ */
/* Model description                                                         */
/* ------------------------------------------------------------------------ */

typedef enum {
    LM_ARCH_LLAMA = 0, /* Llama 2/3, SmolLM, TinyLlama, stories */
    LM_ARCH_MISTRAL,
    LM_ARCH_QWEN2,     /* q/k/v bias */
    LM_ARCH_QWEN3,     /* q_norm/k_norm */
    LM_ARCH_GEMMA3     /* scaled embeddings, (1+w) norms, qk norms, post norms, GELU-tanh, sliding window */
} lm_arch;

const char *lm_arch_name(lm_arch a);

typedef enum { LM_ACT_SILU = 0, LM_ACT_GELU_TANH } lm_act;

typedef struct lm_config {
    lm_arch arch;
    int n_layer;
    int dim;             /* hidden size */
    int n_head;
    int n_kv_head;
    int head_dim;
    int ffn_dim;         /* intermediate size */
    int vocab;
    int max_pos;         /* context length from the config (informational) */
    float rope_theta;        /* rope base of global-attention layers */
    float rope_theta_local;  /* rope base of sliding-window layers (== rope_theta if none) */
    int rope_type;           /* 0 none, 1 linear (positions / rope_factor), 2 llama3 (Llama 3.1+) */
    float rope_factor;       /* linear and llama3 */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;   /* llama3: original_max_position_embeddings */
    float norm_eps;
    int tie_embeddings;  /* output head is the embedding matrix */
    int has_qkv_bias;    /* qwen2 */
    int has_qk_norm;     /* qwen3, gemma3: RMSNorm over head_dim on q and k */
    int has_post_norms;  /* gemma3: post-attention and post-ffn RMSNorm before the residual add */
    int norm_add_one;    /* norm weight w is applied as (1 + w) (HF gemma); GGUF stores 1+w already */
    float embed_scale;   /* embeddings multiplied by this (gemma: sqrt(dim)); 1 otherwise */
    lm_act act;
    float attn_scale;    /* softmax scale (1/sqrt(head_dim) unless the config says otherwise) */
    int sliding_window;  /* 0 = none */
    int sliding_pattern; /* >0: layer i uses global attention iff (i+1) % sliding_pattern == 0; others slide */
    int bos_id, eos_id;  /* -1 if unknown */
    int add_bos;         /* tokenizer adds BOS at the start of a text */
} lm_config;

typedef struct lm_layer_weights {
    const lm_tensor *attn_norm;       /* (dim) */
    const lm_tensor *q_norm, *k_norm; /* (head_dim) or NULL */
    const lm_tensor *post_attn_norm;  /* (dim) or NULL (gemma3) */
    const lm_tensor *ffn_norm;        /* (dim) */
    const lm_tensor *post_ffn_norm;   /* (dim) or NULL (gemma3) */
    const lm_tensor *w[LM_N_MODULES];    /* indexed by lm_module, shapes above */
    const lm_tensor *bias[LM_N_MODULES]; /* NULL where absent (qwen2 has q, k, v) */
} lm_layer_weights;

struct lm_source; /* internal: mapped files, GGUF metadata */

typedef struct lm_model {
    char path[4096];   /* what the user passed */
    char name[256];    /* short name for titles: directory or file basename */
    char format[16];   /* "gguf" or "safetensors" */
    lm_config cfg;
    const lm_tensor *tok_embd; /* (vocab, dim) */
    const lm_tensor *out_norm; /* (dim) */
    const lm_tensor *output;   /* (vocab, dim); == tok_embd when tied */
    lm_layer_weights *layers;  /* [n_layer] */
    lm_tensor *tensors;        /* every tensor of the model, owned */
    int n_tensors;
    struct lm_source *src;
} lm_model;

/* Open a model: a directory with config.json + model.safetensors (or sharded
 * with model.safetensors.index.json), or a .gguf file. Files are mmapped;
 * nothing is read into RAM until a tensor is read. */
int lm_model_open(lm_model **out, const char *path, lm_err *err);
void lm_model_close(lm_model *m);
const lm_tensor *lm_model_find(const lm_model *m, const char *name);
/* Total parameters of one module of one layer (rows*cols). */
int64_t lm_model_module_params(const lm_model *m, int layer, int module);

/* ------------------------------------------------------------------------ */
/* Matrix: layers x 7                                                        */
/* ------------------------------------------------------------------------ */

typedef enum {
    LM_NORM_NONE = 0,
    LM_NORM_LAYER,  /* each row sums to 1 */
    LM_NORM_MODULE, /* each column sums to 1 */
    LM_NORM_GLOBAL  /* the whole matrix sums to 1 */
} lm_norm;

const char *lm_norm_name(lm_norm n);           /* "none", "layer", "module", "global" */
int lm_norm_parse(const char *s, lm_norm *out); /* 0 ok, LM_EARG otherwise */

typedef struct lm_matrix {
    int n_layer;       /* rows */
    double *v;         /* [n_layer * LM_N_MODULES] row-major; NaN = no value */
    char model[256];   /* model name */
    char method[64];   /* e.g. "diff.rel", "grad-weight" */
    char norm[16];     /* normalisation applied, lm_norm_name() */
    char note[512];    /* free text: data file, tokens, options */
    double *layer_extra;     /* optional per-layer vector (e.g. block influence), NULL if none */
    char layer_extra_name[64];
    int *layer_index;  /* optional [n_layer]: the model's layer number of each row, strictly
                        * increasing (a --layers selection); NULL = rows are layers 0, 1, 2, ... */
    char *meta;        /* optional JSON object text: how the matrix was made (run metadata,
                        * written as "meta" in JSON files); owned, NULL if none */
    /* How much data is enough (attribute's data methods; JSON "se", "split_half", "samples"):
     * se [n_layer * 7] the standard error of each cell over the run's samples (one sample =
     * one pass of --batch sequences, one sequence by default), in the cell's units (scaled
     * with the cell by lm_matrix_normalize, to first order); NULL if none. split_half: the
     * Spearman rank correlation between the matrices of the odd and of the even samples
     * (NaN if none); n_samples: the samples behind the matrix (0 if not recorded). */
    double *se;
    double split_half;
    int n_samples;
} lm_matrix;

lm_matrix *lm_matrix_new(int n_layer); /* NULL on allocation failure; values 0 */
void lm_matrix_free(lm_matrix *m);
double lm_matrix_get(const lm_matrix *m, int layer, int module);
void lm_matrix_set(lm_matrix *m, int layer, int module, double v);
/* The model's layer number of row `row` (row itself when m->layer_index is NULL). */
int lm_matrix_layer(const lm_matrix *m, int row);
/* Keep only the rows whose layer number l has l < n_keep && keep[l] (rows and
 * layer_extra shrink, layer_index records the kept layers' numbers). LM_EARG
 * when no row is kept. */
int lm_matrix_select_layers(lm_matrix *m, const uint8_t *keep, int n_keep, lm_err *err);
/* Set m->meta to a copy of json (an object's text; NULL clears). */
int lm_matrix_set_meta(lm_matrix *m, const char *json, lm_err *err);
/* Normalise in place; a row/column/matrix whose sum is 0 stays 0.
 * Uses absolute values' sum as the denominator so signed matrices keep sign. */
int lm_matrix_normalize(lm_matrix *m, lm_norm norm, lm_err *err);

/* Writers. Every file writer is atomic (temp file + rename): on error no
 * partial output exists. */
int lm_matrix_write_csv(const lm_matrix *m, const char *path, lm_err *err);
int lm_matrix_write_json(const lm_matrix *m, const char *path, lm_err *err);
int lm_matrix_read_csv(lm_matrix **out, const char *path, lm_err *err);
int lm_matrix_read_json(lm_matrix **out, const char *path, lm_err *err);
/* Several matrices in one JSON file: {"matrices": [M1, M2, ...]}, each Mi an
 * object exactly as lm_matrix_write_json writes one matrix (that format is
 * unchanged). read_json_many reads either form (*n = 1 for a single-matrix
 * file; *out is an array of n matrices that lm_matrix_list_free frees with
 * every matrix still in it: set an entry NULL to keep that matrix).
 * read_json reads a "matrices" file of exactly one matrix and refuses one of
 * several (LM_EARG). */
int lm_matrix_write_json_many(const lm_matrix *const *ms, int n, const char *path, lm_err *err);
int lm_matrix_read_json_many(lm_matrix ***out, int *n, const char *path, lm_err *err);
void lm_matrix_list_free(lm_matrix **ms, int n);
/* Terminal heatmap with 24-bit colour escapes when color != 0. */
void lm_matrix_print(const lm_matrix *m, FILE *f, int color);

/* ------------------------------------------------------------------------ */
/* Heatmap figures (cairo)                                                   */
/* ------------------------------------------------------------------------ */

/* Colour scales of a grid of several matrices. */
typedef enum {
    LM_PLOT_SCALE_AUTO = 0,  /* one shared scale when every matrix shows the same quantity (same
                              * method and normalisation, lm_plot_same_quantity), else one each */
    LM_PLOT_SCALE_SHARED,    /* one scale and colour bar for every matrix */
    LM_PLOT_SCALE_PER_PANEL  /* each matrix its own scale, its colour bar beside it */
} lm_plot_scales;

typedef struct lm_plot_opts {
    const char *title;   /* NULL: "<model> - <method>" */
    int label_step;      /* 0: auto (about 10 layer labels) */
    int has_center;      /* 1: centre the diverging scale at 'center' */
    double center;       /* default: 0 with a symmetric range [-M, M] for signed quantities
                          * (grad-weight-signed, act-grad, ig, ablate, ablate-mean; unknown
                          * methods with a negative value), else the median of the values */
    int has_range;       /* 1: use vmin/vmax */
    double vmin, vmax;
    int cols;            /* grid columns for several matrices (0: all in one row) */
    lm_plot_scales scales; /* default AUTO */
} lm_plot_opts;

/* No title, automatic labels, centre and range, one row, AUTO scales. */
void lm_plot_opts_default(lm_plot_opts *o);
/* 1 when every matrix of ms[0..n) shows the same quantity (method and
 * normalisation), so that one colour scale compares them fairly. */
int lm_plot_same_quantity(const lm_matrix *const *ms, int n);
/* 1 when ms[0..n) are drawn as a signed quantity (centre 0, range [-M, M]):
 * some matrix's method is signed, or is unknown and has a negative value. */
int lm_plot_is_signed(const lm_matrix *const *ms, int n);
/* Draw one matrix (n == 1) or a grid of n (colour scales: o->scales). A
 * matrix with a per-layer vector (layer_extra, e.g. act-sq's block influence)
 * gets one more panel for it, a one-column heatmap with its own scale, after
 * the matrices. Each colour bar is labelled with its quantity and unit or
 * normalisation; a signed (symmetric) bar marks the data's min and max. The
 * format follows the extension of path: .png (300 dpi), .svg (text kept as
 * <text> elements, font named) or .pdf. Atomic. */
int lm_plot_write(const lm_matrix *const *ms, int n, const lm_plot_opts *o, const char *path, lm_err *err);

/* ------------------------------------------------------------------------ */
/* Diff of two checkpoints                                                   */
/* ------------------------------------------------------------------------ */

typedef enum {
    LM_DIFF_REL = 0, /* ||W_ft - W_base||_F / ||W_base||_F */
    LM_DIFF_DENSITY, /* fraction of entries with |W_ft - W_base| > tol */
    LM_DIFF_COSINE,  /* cos(vec W_base, vec W_ft) */
    LM_DIFF_RANK,    /* entropy effective rank of the update (randomized SVD) */
    LM_DIFF_COUNT
} lm_diff_metric;

extern const char *const lm_diff_metric_names[LM_DIFF_COUNT]; /* "rel", "density", "cosine", "rank" */

typedef struct lm_diff_opts {
    double tol;         /* density tolerance; 0 = exact inequality */
    int rank_k;         /* randomized SVD target rank (sketch width = rank_k + oversample,
                           clipped to min(rows, cols): then the rank is the exact SVD's);
                           0 = skip the rank metric (its matrix is all NaN; much faster) */
    int oversample;
    int power_iters;
    uint64_t seed;      /* the sketch is a function of (seed, cols): results are reproducible */
    int threads;        /* 0 = all cores */
    lm_progress_fn progress; /* units: bytes of the two checkpoints' module weights */
    void *progress_ctx;
    const uint8_t *layers; /* NULL: every layer; else only layers l < n_layers_mask with
                            * layers[l] != 0 are read and compared (other rows are NaN) */
    int n_layers_mask;
    const struct lm_backend *backend; /* NULL = the CPU backend (src/compute/backend.h) */
    const struct lm_attr_dist *dist; /* NULL (or size 1): this process reads every tensor. Several
                            * processes (the CLI's MPI ranks): each reads the tensors given to it
                            * (the largest first, to the process with the fewest bytes so far:
                            * the same plan on every process), then one sum() hands every process
                            * every result, equal bit for bit to one process's. Every process must
                            * make the same call. A process that fails returns at once, without
                            * the sum: the caller must then end every process, as for
                            * lm_attribute. Progress counts this process's bytes. */
} lm_diff_opts;

/* tol 0, rank_k 64, oversample 8, power_iters 2, a fixed seed, all cores. */
void lm_diff_opts_default(lm_diff_opts *o);
/* Fill out[LM_DIFF_COUNT] (each lm_matrix_new'd by the call; all NULL on
 * error). o == NULL means the defaults. The models must have the same number
 * of layers and the same shape for every module (else LM_ESHAPE naming both
 * paths, the layer, the module and both shapes); formats and dtypes may differ
 * (GGUF vs safetensors, bf16 vs Q8_0). Edge values:
 *   zero update (W_ft == W_base): rel 0, density 0, cosine 1, rank 0;
 *   W_base == 0 with a nonzero update: rel NaN; either side 0: cosine NaN;
 *   Inf/NaN in the weights: rank NaN, the others non-finite (IEEE arithmetic).
 * Results do not depend on the thread count. While it runs, the workers call
 * OpenBLAS single-threaded: its thread count (and with an OpenMP OpenBLAS,
 * OpenMP's default) is set to 1 and restored afterwards. */
int lm_diff(const lm_model *base, const lm_model *ft, const lm_diff_opts *o,
            lm_matrix *out[LM_DIFF_COUNT], lm_err *err);

/* Which entries two fine-tunes of one base updated: per (layer, module) the
 * masks M_x = {ij : |W_x,ij - W_base,ij| > tol} (the difference taken exactly
 * in double, so tol 0 counts every changed value: exact for bf16 and F32),
 * and out[LM_OVERLAP_JACCARD] = |Ma & Mb| / |Ma | Mb|,
 * out[LM_OVERLAP_COEF] = |Ma & Mb| / min(|Ma|, |Mb|) (NaN where the
 * denominator is 0: no update), out[LM_OVERLAP_DENSITY_A/_B] = |Ma| / (m n),
 * |Mb| / (m n). Uses o's tol, threads, progress, layers and backend (the rank
 * options are ignored). Shapes as lm_diff (LM_ESHAPE naming both paths). */
enum { LM_OVERLAP_JACCARD = 0, LM_OVERLAP_COEF, LM_OVERLAP_DENSITY_A, LM_OVERLAP_DENSITY_B, LM_OVERLAP_COUNT };
extern const char *const lm_overlap_metric_names[LM_OVERLAP_COUNT]; /* "jaccard", "overlap", "density-a", "density-b" */
int lm_diff_overlap(const lm_model *base, const lm_model *a, const lm_model *b, const lm_diff_opts *o,
                    lm_matrix *out[LM_OVERLAP_COUNT], lm_err *err);

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct lm_tokenizer lm_tokenizer;

/* From GGUF metadata, or the tokenizer.json beside an HF model. */
int lm_tokenizer_open(lm_tokenizer **out, const lm_model *m, lm_err *err);
/* From a tokenizer.json file directly. */
int lm_tokenizer_open_json(lm_tokenizer **out, const char *path, lm_err *err);
void lm_tokenizer_free(lm_tokenizer *t);
int lm_tokenizer_vocab(const lm_tokenizer *t);
int lm_tokenizer_bos(const lm_tokenizer *t); /* -1 if none */
int lm_tokenizer_eos(const lm_tokenizer *t);
int lm_tokenizer_add_bos(const lm_tokenizer *t);
/* Encode UTF-8 text (not NUL-terminated; len bytes). add_bos: -1 = as the
 * model says, 0 = never, 1 = always. *ids is malloc'd; caller frees. Invalid
 * UTF-8 is LM_EENCODING. */
int lm_tokenize(const lm_tokenizer *t, const char *text, size_t len, int add_bos,
                int32_t **ids, int *n, lm_err *err);
/* The vocabulary entry of id as stored (e.g. "▁the", "Ġthe", "<0x0A>"). */
const char *lm_token_piece(const lm_tokenizer *t, int32_t id);
/* Decode ids to UTF-8 text (byte fallback and byte-level mapping undone).
 * *out is malloc'd and NUL-terminated. */
int lm_detokenize(const lm_tokenizer *t, const int32_t *ids, int n, char **out, lm_err *err);

/* ------------------------------------------------------------------------ */
/* Data                                                                      */
/* ------------------------------------------------------------------------ */

/* One sequence: tok[0..n). mask[i] = 1 when predicting tok[i+1] from the
 * prefix tok[0..i] counts in the loss (i < n-1; mask[n-1] is 0). */
typedef struct lm_seq {
    int32_t *tok;
    uint8_t *mask;
    int n;
} lm_seq;

typedef struct lm_dataset {
    lm_seq *seqs;
    int n_seq;
    int64_t n_tokens;  /* total tokens */
    int64_t n_targets; /* total masked-in predictions */
} lm_dataset;

typedef struct lm_data_opts {
    int seq_len;        /* max tokens per sequence (BOS included) */
    int64_t max_tokens; /* stop after this many tokens (0 = all) */
    int llamacpp_chunks;  /* plain text only: cut as llama-imatrix / llama-perplexity -c seq_len
                           * do (chunk i = tokens [i*seq_len, (i+1)*seq_len) of the text, BOS
                           * included, its first token replaced by BOS; a partial last chunk,
                           * or one max_tokens would cut, is dropped; one final newline of the
                           * text is left out, as llama.cpp's -f does); 0: layermap's chunks */
} lm_data_opts;

/* Plain text (split into seq_len chunks, each starting with BOS when the model
 * adds one), JSONL with "text", or JSONL with "prompt" + "completion" (loss on
 * the completion only). The format is detected from the content. */
int lm_dataset_load(lm_dataset **out, const char *path, const lm_tokenizer *tok,
                    const lm_data_opts *o, lm_err *err);
void lm_dataset_free(lm_dataset *d);
/* The same from memory (text is UTF-8, lengths in bytes, not NUL-terminated):
 *   lm_dataset_from_text   one plain text, chunked exactly as a text file;
 *   lm_dataset_from_texts  n texts, one sequence each (as JSONL "text" lines), or,
 *                          when completions != NULL, n prompt/completion pairs (as
 *                          JSONL "prompt"/"completion": loss on the completion only);
 *   lm_dataset_from_ids    n token-id sequences as given (no BOS added), truncated
 *                          to seq_len, every prediction counted; ids checked against vocab.
 * Messages name the record ("texts[3]: invalid UTF-8 ..."). */
int lm_dataset_from_text(lm_dataset **out, const char *text, size_t len, const lm_tokenizer *tok,
                         const lm_data_opts *o, lm_err *err);
int lm_dataset_from_texts(lm_dataset **out, const char *const *texts, const size_t *lens,
                          const char *const *completions, const size_t *completion_lens, int n,
                          const lm_tokenizer *tok, const lm_data_opts *o, lm_err *err);
int lm_dataset_from_ids(lm_dataset **out, const int32_t *const *ids, const int *lens, int n, int vocab,
                        const lm_data_opts *o, lm_err *err);
/* Data parallelism: the dataset's samples (sample k = sequences [k*group,
 * (k+1)*group), the last one shorter) shared among `parts` processes, balanced
 * by token count: owner[k] in [0, parts) for each of the ceil(n_seq / group)
 * samples. Greedy, largest sample first (ties: lower index), each to the part
 * with the fewest tokens so far (ties: lower part): a function of the dataset
 * alone, so every process computes the same shares. LM_OK, or LM_EARG for
 * group or parts < 1. */
int lm_dataset_share(const lm_dataset *d, int group, int parts, int *owner, lm_err *err);
/* The same over the samples k with skip[k] == 0 (skip NULL: all): those get
 * their part, the others owner[k] = -1 (a resumed run shares what is left). */
int lm_dataset_share_skip(const lm_dataset *d, int group, int parts, const uint8_t *skip, int *owner, lm_err *err);
/* sha256 (64 hex digits) over every sequence's length, tokens and mask, in
 * order: two datasets hash alike exactly when a pass over them sees the same
 * numbers (another file, --seq-len, --max-tokens or tokenizer differs). */
void lm_dataset_sha256(const lm_dataset *d, char hex[65]);


/* ------------------------------------------------------------------------ */
/* Compute engine                                                            */
/* ------------------------------------------------------------------------ */

typedef struct lm_engine lm_engine;

typedef struct lm_engine_opts {
    int threads;          /* 0 = all cores */
    int max_seq;          /* longest sequence the engine will see */
    int max_batch;        /* sequences packed into one pass (default 1) */
    size_t weight_cache_bytes; /* F32 weights kept dequantized; 0 = auto (a third of RAM) */
    int ggml_compat;      /* 1: round activations as llama.cpp does for quantized products
                           * and its F16 KV cache (to compare with llama.cpp; default 0:
                           * exact F32 on the dequantized weights) */
    size_t act_cache_bytes;    /* every layer's intermediates kept (no recompute in the
                                * backward) when they fit; 0 = auto (a sixth of RAM); 1 = never */
    const struct lm_backend *backend; /* what the engine computes through (src/compute/backend.h);
                                       * NULL = the CPU backend (F32, or as `compute` asks) */
    int compute;          /* the matrix products (when backend is NULL): LM_COMPUTE_F32 (default,
                           * the reference), _BF16 (inputs rounded to bf16, F32 accumulation:
                           * oneDNN on AMX / AVX512_BF16; LM_EUNSUPPORTED on other CPUs),
                           * _BF16_REF (the same rounding on any CPU at F32 speed: to check
                           * accuracy), _AUTO (BF16 where the CPU has it, else F32) */
} lm_engine_opts;

enum { LM_COMPUTE_F32 = 0, LM_COMPUTE_BF16, LM_COMPUTE_BF16_REF, LM_COMPUTE_AUTO };
/* Can LM_COMPUTE_BF16 run here (built with oneDNN, CPU with bf16 instructions)? */
int lm_compute_bf16_available(void);
/* "f32", "bf16", "bf16-ref", "auto"; lm_compute_parse gives -1 for other names. */
const char *lm_compute_name(int compute);
int lm_compute_parse(const char *s);
/* What the engine's products do: LM_COMPUTE_F32, _BF16 or _BF16_REF (AUTO resolved). */
int lm_engine_compute(const lm_engine *e);
/* Time and floating-point operations (2 M N K each) of every matrix product
 * of the CPU backends from lm_product_profile(1) on (which zeroes them; 0
 * stops counting): what share of a run the products take, at what rate. */
void lm_product_profile(int enable);
void lm_product_profile_read(double *seconds, double *flops, long *calls);

int lm_engine_new(lm_engine **out, const lm_model *m, const lm_engine_opts *o, lm_err *err);
void lm_engine_free(lm_engine *e);
/* Forward one sequence. logits: (n, vocab) or NULL. */
int lm_engine_forward(lm_engine *e, const int32_t *tok, int n, float *logits, lm_err *err);
/* Forward one sequence computing only the last position's logits (prompt
 * processing); the logits are kept for lm_generate_greedy-style use. */
int lm_engine_forward_last(lm_engine *e, const int32_t *tok, int n, lm_err *err);
/* Sum of next-token NLL over masked-in positions of s; *count = their number. */
int lm_engine_loss(lm_engine *e, const lm_seq *s, double *loss, int64_t *count, lm_err *err);
/* Name of the matrix kernel in use, e.g. "OpenBLAS 0.3.21 SkylakeX". */
const char *lm_engine_kernel_name(void);
/* Which BLAS core runs and the core this CPU supports best (NULL when no
 * better choice is known). OpenBLAS picks its core when the library loads,
 * from OPENBLAS_CORETYPE: a program that finds lm_blas_core() differing from
 * lm_blas_wanted_core() sets that variable and re-executes itself (the CLI
 * does), or loses up to 5x in every matrix product. */
const char *lm_blas_core(void);
const char *lm_blas_wanted_core(void);
/* Which OpenBLAS build the dynamic loader gave this process: "OpenMP",
 * "pthreads", "sequential" (openblas_get_parallel), and the file it came from
 * (symlinks resolved). layermap runs OpenMP threads: the pthread build's own
 * threads fight them for the cores (0.55x measured) and the sequential build
 * runs every product on one core. lm_blas_warning() is NULL when the OpenMP
 * build runs (or only one thread does), else one line naming the file, the
 * build, the core and the fix (unset LD_LIBRARY_PATH, rebuild, install
 * libopenblas0-openmp); the library never prints it: the CLI prints it at
 * start-up and the Python package warns on import. Safe from any thread. */
const char *lm_blas_variant(void);
const char *lm_blas_library(void);
const char *lm_blas_warning(void);

/* Greedy decoding: append up to n_new tokens to prompt (stops at EOS). */
int lm_generate_greedy(lm_engine *e, const int32_t *prompt, int n_prompt, int n_new,
                       int32_t **out, int *n_out, lm_err *err);

/* ------------------------------------------------------------------------ */
/* Attribution methods                                                       */
/* ------------------------------------------------------------------------ */

typedef enum {
    LM_METHOD_GRAD_WEIGHT = 0, /* sum_s sum_ij |W_ij G_s,ij| */
    LM_METHOD_GRAD_WEIGHT_SIGNED, /* sum_s sum_ij W_ij G_s,ij */
    LM_METHOD_FISHER,          /* sum_s sum_ij G_s,ij^2 */
    LM_METHOD_GRAD_NORM,       /* sum_s ||G_s||_F */
    LM_METHOD_ACT_GRAD,        /* -sum_s sum_t dL_s/dy_t . y_t */
    LM_METHOD_IG,              /* integrated gradients on the module output, 0 -> y */
    LM_METHOD_ABLATE,          /* L(y := 0) - L */
    LM_METHOD_ABLATE_MEAN,     /* L(y := mean_data(y)) - L */
    LM_METHOD_ACT_SQ,          /* sum_t ||x_t||^2 of the module input (imatrix-like) */
    LM_METHOD_WANDA,           /* sum_ij |W_ij| ||X_j||_2 */
    LM_METHOD_COUNT
} lm_method;

extern const char *const lm_method_names[LM_METHOD_COUNT];
int lm_method_parse(const char *s, lm_method *out);

/* Several processes (e.g. MPI ranks) sharing one attribution: process `rank`
 * of `size` runs only its share of the samples (lm_dataset_share with group =
 * the batch), and sum() makes buf[0..n) the element-wise sum over every
 * process, the same result on each (an allreduce: MPI_Reduce to one rank, then
 * MPI_Bcast, say). The library itself links no MPI: the caller supplies the
 * collective. Every process calls sum() at the same points in the same order
 * (after a phase whose sums the next phase uses, ablate-mean's means; at the
 * end, every accumulated sum: the float64 sums and the counts, the counts as
 * doubles, exact below 2^53), so each process ends with the whole result.
 * A process whose call fails returns without reaching the next sum(): the
 * caller must then end every process (MPI_Abort), which wait there.
 * The run goes in rounds, with one sum() of a few flags between them (any
 * process canceled; process 0's clock says a checkpoint is due): every
 * process stops at the same round and saves together. A checkpoint holds the
 * sums reduced over the processes and the set of finished samples (global
 * indices); process 0 alone reads and writes it, and sends what the others
 * need (the finished samples, ablate-mean's means) through sum(). A resumed
 * run may have another number of processes: the samples left are shared
 * again (lm_dataset_share_skip). With until_stable the last pass runs in
 * data order, round j giving process r the sample j * size + r, so that the
 * split-half statistic is checked after each sample in data order as one
 * process checks it; a process whose sample came after the stopping point
 * takes it back out. Not with max_seqs (LM_EARG). */
typedef struct lm_attr_dist {
    int rank, size;
    void *ctx;
    int (*sum)(void *ctx, double *buf, size_t n, lm_err *err);
} lm_attr_dist;

typedef struct lm_attr_opts {
    int ig_steps;          /* default 32 */
    int batch;             /* sequences per pass (<= the engine's max_batch); default 1 */
    const char *checkpoint_path; /* accumulated sums saved here during the run, NULL = none
                            * (format LMCKPT04, lm_attr_fingerprint below) */
    int resume;            /* 1: continue from checkpoint_path when it exists (refused, LM_EARG,
                            * when it is another run's); 0: start afresh and overwrite it */
    double checkpoint_secs;/* save once this long has passed since the last save (default 60 s),
                            * besides when canceled and at the end; 0 = after every sample */
    int max_seqs;          /* stop after this many sequences in this call (0 = all); the
                            * checkpoint lets a later call finish the run */
    lm_progress_fn progress;
    void *progress_ctx;
    const uint8_t *layers; /* NULL: every layer; else work only on layers l < n_layers with
                            * layers[l] != 0 where the method allows it (ablate, ablate-mean,
                            * ig, act-sq, wanda: the other layers' interventions and sums are
                            * skipped) and their cells are NaN; the gradient methods need the
                            * whole backward anyway and compute every layer */
    int n_layers;
    volatile int *cancel;  /* NULL, or a flag another thread or a signal handler may set:
                            * checked between samples (several processes: between rounds,
                            * any process's flag stops them all); when nonzero the call saves
                            * its checkpoint (if any) and returns LM_ECANCELED, unless the
                            * work was all done (then it finishes) */
    double until_stable;   /* > 0: stop reading data once the split-half Spearman correlation
                            * (lm_matrix.split_half) of every method of a pass has been >= this
                            * for 3 samples in a row, after at least 8 samples; the result is
                            * complete, over the sequences read (n_seq_done). 0 = read all */
    const lm_attr_dist *dist; /* NULL (or size 1): this process does all the work. Progress
                            * then reports this process's share scaled to the whole data
                            * (an estimate of the global progress) */
} lm_attr_opts;

void lm_attr_opts_default(lm_attr_opts *o);

typedef struct lm_attr_result {
    lm_matrix *m;          /* the method's matrix */
    lm_matrix *also;       /* ACT_SQ: the wanda matrix; WANDA: the act-sq matrix; IG: exact
                            * L(y:=0) - L per module (the completeness reference); else NULL */
    double loss_sum;       /* total NLL over the data (clean model) */
    int64_t n_targets;
    int64_t n_tokens;
    int n_seq_done;        /* sequences processed so far (== dataset size when complete) */
    int complete;          /* 0 when max_seqs stopped the run early */
    double ig_gap;         /* IG: sum_m |IG_m - Delta_m| / sum_m |Delta_m| */
    double *block_influence; /* ACT_SQ/WANDA: per layer mean_t (1 - cos(h_in, h_out)), [n_layer] */
    double seconds;        /* wall time of this call */
    int n_samples;         /* samples (passes of `batch` sequences) of the last phase; m->se,
                            * m->split_half are over these (not for wanda: se NULL) */
    double split_half;     /* = m->split_half */
    int stopped_stable;    /* until_stable ended the run before the data did */
    /* ACT_SQ/WANDA: sum over every token of x_j^2 for each input column j of each
     * module's input (what llama-imatrix calls in_sum2): module (l, m) has its
     * input width of values from in_sum2 + in_sum2_off[l * 7 + m] (offsets
     * [L*7 + 1]); NULL for other methods. Layers outside lm_attr_opts.layers
     * are 0. Each sum counts n_tokens tokens. */
    double *in_sum2;
    size_t *in_sum2_off;
} lm_attr_result;

int lm_attribute(lm_engine *e, const lm_dataset *d, lm_method method, const lm_attr_opts *o,
                 lm_attr_result *res, lm_err *err);
void lm_attr_result_free(lm_attr_result *r);
/* Several methods over the same data: methods[0..n) distinct, res[0..n) filled
 * in the same order, each equal to what lm_attribute gives for that method
 * alone. Methods that share one forward and backward (grad-weight,
 * grad-weight-signed, fisher, grad-norm, act-grad; act-sq and wanda in the
 * forward) are computed from one pass over the data; ablate, ablate-mean and
 * ig run their own passes one after the other. A checkpoint covers the set. */
int lm_attribute_many(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                      const lm_attr_opts *o, lm_attr_result *res, lm_err *err);

/* Checkpoints (format LMCKPT04, src/method/checkpoint.c). A checkpoint belongs
 * to one run, named by its fingerprint: everything that changes the sums.
 * Resuming with another fingerprint is refused (LM_EARG) with a message that
 * names the file and what differs; a truncated or corrupt file (its sha256
 * trailer does not match) is LM_ECORRUPT naming the file, and a file of an
 * older format says so. Options that act on the finished sums only (the
 * outputs, normalisation, per-parameter division) and the thread or process
 * count are not part of it. */
typedef struct lm_attr_fingerprint {
    char model_sha256[65];  /* lm_model_sha256: headers and samples of every tensor's bytes */
    int64_t model_bytes;    /* bytes of every tensor */
    char model_name[256];   /* the model's path, for messages only (not compared) */
    char data_sha256[65];   /* lm_dataset_sha256: every sequence's tokens and mask */
    int n_seq, longest;     /* sequences, the longest one's tokens */
    int64_t n_tokens;
    int n_methods;
    int methods[LM_METHOD_COUNT]; /* the set, ascending (the order of a call does not matter) */
    int batch;
    int ig_steps;           /* 0 unless ig is among the methods */
    int n_layer;
    char layers[256];       /* lm_attr_opts.layers as "0-5,20", or "all" */
    double until_stable;    /* 0: none */
    int compute;            /* lm_engine_compute: F32, BF16 or BF16_REF products */
    char sha256[65];        /* of all the above but model_name: names the run */
} lm_attr_fingerprint;

int lm_attr_fingerprint_of(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                           const lm_attr_opts *o, lm_attr_fingerprint *fp, lm_err *err);

/* Where the checkpoint at o->checkpoint_path stands, read and checked as
 * lm_attribute_many would resume from it (fingerprint, checksum, contents). */
typedef struct lm_attr_ckpt_info {
    int exists;            /* 0: no file there (LM_OK; the rest is 0) */
    int finished;          /* nothing left to compute */
    int n_passes, pass;    /* passes over the data of the whole run, the one it stands in (0-based) */
    char pass_label[160];  /* that pass's methods, "grad-weight+fisher", "ablate-mean (means)" */
    int n_seq, seq_done;   /* sequences of a pass, and done of that pass */
    double tokens_done, tokens_total; /* over every pass (the progress callback's units) */
} lm_attr_ckpt_info;

int lm_attr_checkpoint_probe(lm_engine *e, const lm_dataset *d, const lm_method *methods, int n,
                             const lm_attr_opts *o, lm_attr_ckpt_info *info, lm_err *err);

/* ------------------------------------------------------------------------ */
/* Acting on a matrix: compare, LoRA targets, report                        */
/* ------------------------------------------------------------------------ */

/* Rank agreement of two matrices with the same number of layers (compare.c).
 * Cells where either value is NaN are left out (pairwise); n counts the rest.
 *   spearman  Pearson correlation of the average ranks (ties share a rank);
 *   kendall   tau-b: (C - D) / sqrt((n0 - T_a)(n0 - T_b)), n0 = n(n-1)/2,
 *             T_a / T_b = pairs tied in a / in b (what scipy.stats.kendalltau gives);
 *   topk      |top-k(a) & top-k(b)| / k over the n cells, k = min(k asked, n);
 *             the k largest of each, ties at the cut broken by the lower cell
 *             index (layer * 7 + module) first.
 * A correlation is NaN when n < 2 or one side is constant; topk is NaN when n == 0. */
typedef struct lm_compare_stats {
    int n;          /* cells finite in both (NaN excluded pairwise; +-Inf rank as extremes) */
    int k;          /* k used for topk */
    double spearman, kendall, topk;
} lm_compare_stats;

/* LM_ESHAPE when the layer counts differ, LM_EARG for k < 1, LM_ENOMEM. */
int lm_compare(const lm_matrix *a, const lm_matrix *b, int k, lm_compare_stats *out, lm_err *err);
/* Write the pairwise table (pairs in the order (0,1), (0,2), ..., (1,2), ...:
 * n_names*(n_names-1)/2 entries of st) as CSV ("a,b,n,k,spearman,kendall,topk")
 * or JSON ({"pairs": [{"a":..,"b":..,"n":..,"k":..,"spearman":..,...}]}, NaN as
 * null), by the extension of path (.csv or .json, else LM_EARG). Atomic. */
int lm_compare_write(const char *const *names, int n_names, const lm_compare_stats *st,
                     const char *path, lm_err *err);

/* LoRA placement (lora.c). Each cell (layer, module) of a score matrix may get
 * an adapter of rank r from the ladder R, 2R, 4R, ... <= max_rank (R = rank);
 * it costs r * (in + out) parameters. The value of a cell with score v at rank
 * r is v * log2(1 + r / R) (and no rank exceeds min(in, out)): adding a module at R is worth v, each doubling of its
 * rank less (0.58 v, 0.74 v for twice the cost, ...). Greedy: repeatedly take
 * the next ladder step (0 -> R, or r -> 2r) with the largest value gained per
 * parameter that still fits in the budget (ties: lower cell index, then lower
 * rank); a cell whose next step does not fit gets no further step. Because
 * every cell's gains per parameter decrease along its ladder, this is the
 * greedy of a concave separable knapsack. v is score / (in * out) (per_param,
 * the default) or the score itself; cells whose v is NaN, Inf or <= 0 never get
 * an adapter. */
typedef struct lm_lora_opts {
    int64_t budget_params; /* total LoRA parameters allowed, >= 0 */
    int rank;              /* R: the first rung and PEFT's default r (default 8) */
    int max_rank;          /* top of the ladder (default 64; >= rank) */
    int per_param;         /* 1 (default): score / (in * out) */
    double alpha_ratio;    /* lora_alpha = alpha_ratio * r for every module (default 2) */
} lm_lora_opts;

void lm_lora_opts_default(lm_lora_opts *o);

typedef struct lm_lora_plan {
    int n_layer;
    int *rank;           /* [n_layer * LM_N_MODULES]; 0 = no adapter */
    int64_t *in, *out;   /* [n_layer * LM_N_MODULES] the module dims used */
    int64_t params;      /* sum of rank * (in + out): <= budget_params */
    double value;        /* sum of v * log2(1 + rank / R) over the cells */
    int default_rank;    /* R */
    double alpha_ratio;
} lm_lora_plan;

/* in_dim/out_dim: [n_layer * LM_N_MODULES] columns and rows of each module's
 * weight (>= 1). LM_EARG for bad options, LM_ENOMEM. Free with lm_lora_plan_free. */
int lm_lora_select(const lm_matrix *scores, const int64_t *in_dim, const int64_t *out_dim,
                   const lm_lora_opts *o, lm_lora_plan *plan, lm_err *err);
/* The same with the dims of a model; LM_ESHAPE (naming the model) when its
 * layer count differs from the matrix's. */
int lm_lora_select_model(const lm_matrix *scores, const lm_model *m, const lm_lora_opts *o,
                         lm_lora_plan *plan, lm_err *err);
void lm_lora_plan_free(lm_lora_plan *plan);
/* HF module name of a module: "self_attn.q_proj", ..., "mlp.gate_proj". */
const char *lm_lora_hf_name(int module);
/* Write a PEFT LoraConfig JSON (peft.LoraConfig(**json) accepts it):
 * target_modules (short names: "q_proj", ...), layers_to_transform,
 * layers_pattern "layers", exclude_modules (every "layers.L.<hf name>" of that
 * layers x modules product without an adapter), r = R, lora_alpha = alpha_ratio * R,
 * rank_pattern / alpha_pattern {"layers.L.<hf name>": r} for the modules whose
 * rank is not R (PEFT matches a key k against a module name by the regex
 * (.*\.)?(k)$), task_type "CAUSAL_LM"; nothing else, so that LoraConfig takes it
 * as it is. A plan with no adapter is LM_EARG (PEFT needs targets). Atomic. */
int lm_lora_write_json(const lm_lora_plan *p, const lm_lora_opts *o, const char *path, lm_err *err);

/* Quantization recipe for llama.cpp (recipe.c): a GGUF type for every weight
 * tensor of a model (the 7 modules of every layer, token_embd, output) that
 * keeps as much of an attribution matrix as a bits-per-weight budget allows.
 *
 * Types and their cost: bytes per block of ggml (ggml-common.h): q4_0 18 B per
 * 32 values (4.5 bpw), q4_1 20 (5.0), q5_0 22 (5.5), q5_1 24 (6.0), q8_0 34
 * (8.5); per 256 values q2_k 84 (2.625), q3_k 110 (3.4375), q4_k 144 (4.5),
 * q5_k 176 (5.5), q6_k 210 (6.5625); f16 and bf16 2 B per value (16). A type
 * fits a tensor when its row length ne0 (the input dim) is a multiple of its
 * block: k-quants need ne0 % 256 == 0 (SmolLM2's 576 and Gemma 3's 640 are
 * not), the 32-block types ne0 % 32 == 0, f16 anything.
 *
 * Error model: err(T) is the relative mean squared error of round-to-nearest
 * on Gaussian weights with T's scheme, (step)^2 / 12 over sigma^2 with step
 * 2 E[max|x|] / 2^b (symmetric types: q4_0, q5_0, q8_0 (/ 254), q3_k, q6_k) or
 * E[max x - min x] / (2^b - 1) (types with a minimum: q4_1, q5_1, q2_k, q4_k,
 * q5_k), the expectations over the scale's group (32 values, or 16 for q2_k,
 * q3_k, q6_k); f16/bf16: rounding to 11/8 significant bits, 2^(-2p) / 3. So
 * each extra bit divides err by about 4, and at equal bits a type with a
 * minimum or a smaller group errs less (q4_k < q4_0). lm_qtype_info gives it.
 *
 * Objective: a tensor of importance I at type T keeps I * (1 - err(T)); the
 * recipe maximises the sum over the tensors, i.e. minimises sum I * err(T),
 * subject to sum bytes(T) <= bpw * weights / 8. I is the matrix cell (a total
 * over the module's weights, as grad-weight, fisher and act-sq are; per_weight:
 * the cell times the module's weights). The damage I * err(T) is what a
 * second-order model of the loss gives when every weight of the tensor gets
 * the same relative error. Greedy (the Lagrangian relaxation of this multiple-
 * choice knapsack): every module starts at its cheapest fitting type and
 * climbs the lower convex hull of (bytes, err) of the types that fit it (types
 * off the hull, e.g. q4_1 next to q4_0 and q5_0, are never chosen); each round
 * takes the step with the largest damage removed per byte that still fits the
 * budget left (ties: the lower tensor); a tensor whose next step does not fit
 * climbs no further. Hull steps of one tensor have decreasing gains per byte,
 * so two modules of the same shape get types in the order of their importance.
 * Cells <= 0 keep the cheapest type unless bytes are left over.
 *
 * token_embd and output have no cell: output.weight, or token_embd.weight
 * when the embeddings are tied (it then is the output), gets q6_k when its rows
 * fit k-quants, else q8_0 (llama.cpp's rule for the output in its k-quant
 * mixtures, with its own q6_k -> q8_0 fallback); an untied token_embd gets
 * q4_k, else q4_0 (the base type of llama.cpp's Q4_K_M mixture, which keeps the
 * embedding at its base type). Options override both. Their bytes come out of
 * the budget first. */
typedef enum lm_qtype {
    LM_QT_Q2_K = 0, LM_QT_Q3_K, LM_QT_Q4_0, LM_QT_Q4_1, LM_QT_Q4_K, LM_QT_Q5_0, LM_QT_Q5_1,
    LM_QT_Q5_K, LM_QT_Q6_K, LM_QT_Q8_0, LM_QT_F16, LM_QT_BF16, LM_QT_COUNT
} lm_qtype;

typedef struct lm_qtype_info {
    const char *name; /* llama.cpp's name, as --tensor-type takes it: "q4_0", "q6_k", "f16" */
    int block;        /* values per block */
    int bytes;        /* bytes per block */
    double err;       /* the error model's relative mean squared error */
} lm_qtype_info;

/* NULL for a type out of range. */
const lm_qtype_info *lm_qtype_get(lm_qtype t);
/* Name (case-insensitive, "Q4_K" or "q4_k") -> type; LM_EARG listing the types. */
int lm_qtype_parse(const char *s, lm_qtype *out, lm_err *err);

#define LM_RECIPE_EMBD (-1)   /* lm_recipe_tensor.module of token_embd */
#define LM_RECIPE_OUTPUT (-2) /* ... of output (or of a tied token_embd) */

typedef struct lm_recipe_opts {
    double bpw;      /* budget: bits per weight over every tensor of the recipe (> 0) */
    int per_weight;  /* 0 (default): a cell is the module's total importance; 1: per weight */
    int embd_type;   /* an lm_qtype for token_embd, or -1 (default): the rule above */
    int output_type; /* an lm_qtype for output (a tied token_embd), or -1: the rule */
} lm_recipe_opts;

void lm_recipe_opts_default(lm_recipe_opts *o);

typedef struct lm_recipe_tensor {
    char name[128];    /* GGUF name: "blk.3.attn_q.weight", "token_embd.weight" */
    int layer;         /* matrix row, or -1 for token_embd / output */
    int module;        /* LM_MOD_*, LM_RECIPE_EMBD or LM_RECIPE_OUTPUT */
    int64_t ne0, ne1;  /* row length (input dim) and rows */
    double importance; /* I (after per_weight); NaN for token_embd / output */
    lm_qtype type;     /* the choice */
} lm_recipe_tensor;

typedef struct lm_recipe {
    int n;              /* tensors */
    lm_recipe_tensor *t; /* [n], in the order given */
    int64_t weights;    /* sum of ne0 * ne1 */
    int64_t bytes;      /* sum of each tensor's bytes at its type */
    int64_t budget_bytes; /* floor(bpw * weights / 8) */
    double bpw;         /* 8 * bytes / weights (<= opts bpw) */
    double min_bpw;     /* with every module at its cheapest type */
    double damage;      /* sum over the modules of I * err(type) */
    double importance;  /* sum over the modules of max(I, 0) */
} lm_recipe;

/* Choose the types of in[0..n) (name, layer, module, ne0, ne1 filled; layer
 * in [0, m->n_layer) for a module) from the cells of m. LM_EARG for a bad
 * budget or option, for a budget below min_bpw (the message gives it), for a
 * module whose cell is NaN or whose ne0 no type fits; LM_ENOMEM. Free with
 * lm_recipe_free. */
int lm_recipe_select(const lm_matrix *m, const lm_recipe_tensor *in, int n, const lm_recipe_opts *o,
                     lm_recipe *out, lm_err *err);
/* The same over the tensors of a model: the 7 modules of every layer, named as
 * llama.cpp names them (lm_model_gguf_name), token_embd and output (one tensor
 * when tied). LM_ESHAPE (naming the model) when the matrix's layers are not the
 * model's (another count, or a --layers selection); LM_EUNSUPPORTED when a GGUF
 * has another 2-D weight llama-quantize would quantize. */
int lm_recipe_select_model(const lm_matrix *m, const lm_model *model, const lm_recipe_opts *o,
                           lm_recipe *out, lm_err *err);
void lm_recipe_free(lm_recipe *r);
/* The llama-quantize pattern of a tensor name: "^blk\.3\.attn_q\.weight$"
 * (llama-quantize matches each --tensor-type pattern as a regex anywhere in the
 * name and takes the first that matches: an unanchored "output.weight" would
 * also take blk.N.attn_output.weight). Returns buf (truncated to size). */
const char *lm_recipe_pattern(const char *name, char *buf, size_t size);
/* Write llama-quantize's --tensor-type-file: one "PATTERN=type" per line, in
 * the recipe's order (llama-quantize reads whitespace-separated tokens, so the
 * file has no comments). Atomic. */
int lm_recipe_write(const lm_recipe *r, const char *path, lm_err *err);

/* One self-contained HTML file (report.c): for every matrix file (.json or
 * .csv) an inline SVG heatmap (rects and text, the diverging scale of the
 * plots, centred at the median), its values as a table and its run metadata
 * (model, method, norm, note, and every key under "meta" of a JSON file); the
 * compare statistics of every pair with equal layer counts (top-k with k =
 * topk); and the text of recipe_path when not NULL. No external URL. Atomic. */
int lm_report_write(const char *const *inputs, int n, const char *recipe_path, int topk,
                    const char *path, lm_err *err);

/* llama.cpp importance matrix (imatrix.c) from an ACT_SQ or WANDA result:
 * what llama-imatrix writes for the same chunks, read by llama-quantize
 * --imatrix. One entry per module weight, named as llama.cpp names it
 * (lm_model_gguf_name: the GGUF file's own names, or blk.N.attn_q.weight ...
 * for an HF model), entries sorted by name, of the layers in layers[0..n_layers)
 * (NULL: all).
 *   GGUF (default; any path not ending in .dat): general.type = "imatrix",
 *     imatrix.datasets = [dataset] ([] when NULL), imatrix.chunk_count,
 *     imatrix.chunk_size (u32), and per weight NAME.in_sum2 (F32, [n_in]: the
 *     sums of x^2 per input column) and NAME.counts (F32, [1]: the tokens counted).
 *   legacy .dat: i32 n_entries, per entry i32 len, name, i32 ncall = ceil(count /
 *     chunk_size), i32 n_in, f32 (sum / count) * ncall [n_in]; then i32
 *     chunk_count, i32 len, dataset.
 * LM_EARG when r has no column sums, chunk_size < 1, or a sum is not finite
 * (llama-quantize refuses those; the message names the weight). Atomic. */
typedef struct lm_imatrix_info {
    const char *dataset;    /* the data file as given, or NULL */
    int chunk_size;         /* tokens per chunk (llama-imatrix -c) */
    int chunk_count;        /* chunks the sums cover */
    const uint8_t *layers;  /* layers to write, [n_layers] flags; NULL: all */
    int n_layers;
} lm_imatrix_info;

int lm_imatrix_write(const lm_model *m, const lm_attr_result *r, const lm_imatrix_info *info, const char *path,
                     lm_err *err);

#ifdef __cplusplus
}
#endif
#endif /* LAYERMAP_H */

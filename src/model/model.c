/*
 * model.c -- lm_model: one checkpoint, HF (directory of config.json +
 * safetensors) or GGUF (one file), seen the same way.
 *
 * Opening runs in stages: the source (mapped files), the description
 * (config.c), a private copy of every tensor header sorted by name, then the
 * binding of each layer's weights by the format's naming scheme, with every
 * shape checked against the description. Tensor data stays in the mappings.
 *
 * RoPE convention: llama.cpp's converter permutes the q/k rows of 'llama'
 * models into Meta's interleaved-pair order (its "normal" RoPE); qwen2, qwen3
 * and gemma3 use its NEOX RoPE and are stored in HF order. Tensors of the
 * former get qk_perm_heads so that lm_tensor_read_rows hands out HF rows.
 */
#include "model/model.h"
#include "base/sha256.h"
#include "format/safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The seven linear modules of a block, in matrix column order (layermap.h). */
const char *const lm_module_names[LM_N_MODULES] = {
    "attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate",
};

/* What an open model holds on to: the mapped files. */
struct lm_source {
    lm_st_set *st; /* HF safetensors, or NULL */
    lm_gguf *gguf; /* GGUF, or NULL */
    char *dir;     /* HF directory (owned), or NULL */
};

/* ------------------------------------------------------------------------ */
/* Naming schemes                                                            */
/* ------------------------------------------------------------------------ */

/* Tensor names of one format / architecture family. Per-layer names are
 * layer_prefix + N + "." + suffix. NULL: the scheme has no such tensor. */
typedef struct name_scheme {
    const char *attn_norm, *ffn_norm, *post_attn_norm, *post_ffn_norm, *q_norm, *k_norm;
    const char *w[LM_N_MODULES];
    const char *bias[LM_N_MODULES];
} name_scheme;

/* HF Llama, Mistral, Qwen2, Qwen3: post_attention_layernorm is the norm in
 * front of the MLP. */
static const name_scheme hf_llama = {
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    NULL,
    NULL,
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
     "mlp.up_proj.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight"},
    {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.bias",
     "mlp.up_proj.bias", "mlp.down_proj.bias", "mlp.gate_proj.bias"},
};

/* HF Gemma 3: four norms a layer; post_attention_layernorm follows attention. */
static const name_scheme hf_gemma3 = {
    "input_layernorm.weight",
    "pre_feedforward_layernorm.weight",
    "post_attention_layernorm.weight",
    "post_feedforward_layernorm.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
     "mlp.up_proj.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight"},
    {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.bias",
     "mlp.up_proj.bias", "mlp.down_proj.bias", "mlp.gate_proj.bias"},
};

/* GGUF (llama.cpp names), every architecture. */
static const name_scheme gguf_names = {
    "attn_norm.weight",
    "ffn_norm.weight",
    "post_attention_norm.weight",
    "post_ffw_norm.weight",
    "attn_q_norm.weight",
    "attn_k_norm.weight",
    {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight",
     "ffn_gate.weight"},
    {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias", "ffn_up.bias", "ffn_down.bias", "ffn_gate.bias"},
};

/* ------------------------------------------------------------------------ */
/* Tensor lookup                                                             */
/* ------------------------------------------------------------------------ */

/* qsort comparator: lm_tensor by name. */
static int cmp_name(const void *a, const void *b) {
    return strcmp(((const lm_tensor *)a)->name, ((const lm_tensor *)b)->name);
}

/* The model's tensor called name (m->tensors is sorted by name), or NULL. */
static lm_tensor *find_mut(const lm_model *m, const char *name) {
    int lo = 0, hi = m->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(m->tensors[mid].name, name);
        if (c == 0) return &m->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const lm_tensor *lm_model_find(const lm_model *m, const char *name) { return find_mut(m, name); }

const char *lm_model_gguf_name(const lm_model *m, int l, int mod, char *buf, size_t size) {
    if (!strcmp(m->format, "gguf"))
        snprintf(buf, size, "%s", m->layers[l].w[mod]->name);
    else
        snprintf(buf, size, "blk.%d.%s", l, gguf_names.w[mod]);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Binding and shape checks                                                  */
/* ------------------------------------------------------------------------ */

/* State of one binding pass. */
typedef struct binder {
    lm_model *m;
    const name_scheme *ns;
    const char *layer_prefix; /* "model.layers." or "blk." */
    const char *where;        /* path for messages about missing tensors */
    lm_err *err;
} binder;

/* t must have shape (a) when b < 0, else (a, b), and a dtype layermap reads. */
static int check_tensor(binder *b, const lm_tensor *t, int64_t d0, int64_t d1) {
    const lm_config *c = &b->m->cfg;
    int64_t want[2] = {d0, d1};
    int wnd = d1 < 0 ? 1 : 2;
    int ok = t->ndim == wnd && t->shape[0] == d0 && (wnd == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[96], exp[64];
        return lm_fail(b->err, LM_ESHAPE,
                       "%s: tensor '%s': shape %s, expected %s for %s with dim=%d, n_head=%d, n_kv_head=%d, "
                       "head_dim=%d, ffn_dim=%d, vocab=%d",
                       t->path, t->name, lm_fmt_shape(got, sizeof got, t->shape, t->ndim),
                       lm_fmt_shape(exp, sizeof exp, want, wnd), lm_arch_name(c->arch), c->dim, c->n_head, c->n_kv_head,
                       c->head_dim, c->ffn_dim, c->vocab);
    }
    if ((unsigned)t->dtype >= (unsigned)LM_DT_COUNT)
        return lm_fail(b->err, LM_EUNSUPPORTED, "%s: tensor '%s': element type %s cannot be read by layermap", t->path,
                       t->name, t->file_type[0] ? t->file_type : "(unknown)");
    return LM_OK;
}

/* Look up a global tensor; required ones that are missing are an error. */
static int bind_global(binder *b, const char *name, int required, int64_t d0, int64_t d1, lm_tensor **out) {
    *out = find_mut(b->m, name);
    if (!*out) {
        if (!required) return LM_OK;
        return LM_CORRUPT(b->err, "%s: missing tensor '%s' (required for %s)", b->where, name,
                          lm_arch_name(b->m->cfg.arch));
    }
    return check_tensor(b, *out, d0, d1);
}

/* Look up layer il's tensor with this suffix. want: 1 required, 0 must be
 * absent (its presence would change the computation), -1 not looked for. */
static int bind_layer(binder *b, int il, const char *suffix, int want, int64_t d0, int64_t d1, lm_tensor **out) {
    *out = NULL;
    if (!suffix || want < 0) return LM_OK;
    char name[sizeof b->m->tensors[0].name + 32];
    snprintf(name, sizeof name, "%s%d.%s", b->layer_prefix, il, suffix);
    lm_tensor *t = find_mut(b->m, name);
    if (!t) {
        if (!want) return LM_OK;
        return LM_CORRUPT(b->err, "%s: missing tensor '%s' (required for %s)", b->where, name,
                          lm_arch_name(b->m->cfg.arch));
    }
    if (!want)
        return lm_fail(b->err, LM_EUNSUPPORTED,
                       "%s: tensor '%s' is not part of %s as layermap computes it (unexpected %s)", t->path, name,
                       lm_arch_name(b->m->cfg.arch), strstr(suffix, "bias") ? "bias" : "norm");
    *out = t;
    return check_tensor(b, t, d0, d1);
}

/* Bind and check every layer's tensors. */
static int bind_layers(binder *b) {
    lm_model *m = b->m;
    const lm_config *c = &m->cfg;
    const name_scheme *ns = b->ns;
    int64_t dim = c->dim, hd = c->head_dim, q = (int64_t)c->n_head * hd, kv = (int64_t)c->n_kv_head * hd,
            ffn = c->ffn_dim;
    const int64_t wshape[LM_N_MODULES][2] = {{q, dim},   {kv, dim},  {kv, dim}, {dim, q},
                                             {ffn, dim}, {dim, ffn}, {ffn, dim}};
    int is_gguf = m->src->gguf != NULL;
    int perm = is_gguf && (c->arch == LM_ARCH_LLAMA || c->arch == LM_ARCH_MISTRAL);
    for (int il = 0; il < c->n_layer; il++) {
        lm_layer_weights *L = &m->layers[il];
        lm_tensor *t[6];
        int rc;
        int post = c->has_post_norms; /* GGUF post norms in a model without them would be ignored: refuse */
        if ((rc = bind_layer(b, il, ns->attn_norm, 1, dim, -1, &t[0])) ||
            (rc = bind_layer(b, il, ns->ffn_norm, 1, dim, -1, &t[1])) ||
            (rc = bind_layer(b, il, ns->post_attn_norm, post, dim, -1, &t[2])) ||
            (rc = bind_layer(b, il, ns->post_ffn_norm, post, dim, -1, &t[3])) ||
            (rc = bind_layer(b, il, ns->q_norm, c->has_qk_norm, hd, -1, &t[4])) ||
            (rc = bind_layer(b, il, ns->k_norm, c->has_qk_norm, hd, -1, &t[5])))
            return rc;
        L->attn_norm = t[0];
        L->ffn_norm = t[1];
        L->post_attn_norm = t[2];
        L->post_ffn_norm = t[3];
        L->q_norm = t[4];
        L->k_norm = t[5];
        for (int mo = 0; mo < LM_N_MODULES; mo++) {
            lm_tensor *w, *bias;
            int has_bias = c->has_qkv_bias && mo <= LM_MOD_V;
            if ((rc = bind_layer(b, il, ns->w[mo], 1, wshape[mo][0], wshape[mo][1], &w)) ||
                (rc = bind_layer(b, il, ns->bias[mo], has_bias, wshape[mo][0], -1, &bias)))
                return rc;
            if (perm && mo == LM_MOD_Q) w->qk_perm_heads = c->n_head;
            if (perm && mo == LM_MOD_K) w->qk_perm_heads = c->n_kv_head;
            L->w[mo] = w;
            L->bias[mo] = bias;
        }
    }
    return LM_OK;
}

/* Bind embeddings, final norm, output head and the layers. HF prefixes: a
 * text-only model has "model."; multimodal Gemma 3 "model.language_model."
 * (transformers >= 4.52) or "language_model.model." (older). */
static int bind_model(lm_model *m, const char *where, lm_err *err) {
    lm_config *c = &m->cfg;
    binder b = {m, &gguf_names, "blk.", where, err};
    const char *embd = "token_embd.weight", *norm = "output_norm.weight", *head = "output.weight";
    char nbuf[2][96], pbuf[96];
    if (!m->src->gguf) {
        static const char *const prefixes[][2] = {
            {"model.", "lm_head.weight"},
            {"model.language_model.", "lm_head.weight"},
            {"language_model.model.", "language_model.lm_head.weight"},
        };
        int p = 0;
        for (int i = 0; i < 3; i++) {
            snprintf(nbuf[0], sizeof nbuf[0], "%sembed_tokens.weight", prefixes[i][0]);
            if (find_mut(m, nbuf[0])) {
                p = i;
                break;
            }
        }
        snprintf(nbuf[0], sizeof nbuf[0], "%sembed_tokens.weight", prefixes[p][0]);
        snprintf(nbuf[1], sizeof nbuf[1], "%snorm.weight", prefixes[p][0]);
        snprintf(pbuf, sizeof pbuf, "%slayers.", prefixes[p][0]);
        embd = nbuf[0];
        norm = nbuf[1];
        head = prefixes[p][1];
        b.ns = c->arch == LM_ARCH_GEMMA3 ? &hf_gemma3 : &hf_llama;
        b.layer_prefix = pbuf;
    }
    lm_tensor *te, *tn, *to;
    int rc;
    if ((rc = bind_global(&b, embd, 1, c->vocab, c->dim, &te)) || (rc = bind_global(&b, norm, 1, c->dim, -1, &tn)) ||
        (rc = bind_global(&b, head, 0, c->vocab, c->dim, &to)))
        return rc;
    if (!to) c->tie_embeddings = 1; /* no separate head: the embedding serves */
    m->tok_embd = te;
    m->out_norm = tn;
    m->output = c->tie_embeddings ? te : to;
    return bind_layers(&b);
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                              */
/* ------------------------------------------------------------------------ */

/* m->tensors: a sorted copy of n tensor headers, from the array ts or the
 * pointers ptrs. */
static int copy_tensors(lm_model *m, const lm_tensor *ts, const lm_tensor *const *ptrs, uint64_t n, lm_err *err) {
    if (n > INT32_MAX)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: %llu tensors is too many", m->path, (unsigned long long)n);
    m->tensors = lm_calloc((size_t)n, sizeof *m->tensors);
    if (!m->tensors) return lm_nomem(err, (size_t)n * sizeof *m->tensors, "tensor table");
    for (uint64_t i = 0; i < n; i++) m->tensors[i] = ptrs ? *ptrs[i] : ts[i];
    m->n_tensors = (int)n;
    qsort(m->tensors, (size_t)n, sizeof *m->tensors, cmp_name);
    for (int i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i - 1].name, m->tensors[i].name))
            return LM_CORRUPT(err, "%s: tensor '%s' appears twice", m->path, m->tensors[i].name);
    return LM_OK;
}

/* m->name: the file or directory name, without ".gguf". */
static void set_name(lm_model *m) {
    const char *p = m->path;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && p[s - 1] != '/') s--;
    size_t len = n - s;
    if (len > 5 && !strncmp(p + n - 5, ".gguf", 5)) len -= 5;
    if (len >= sizeof m->name) len = sizeof m->name - 1;
    memcpy(m->name, p + s, len);
    m->name[len] = 0;
}

/* The HF half of lm_model_open. */
static int open_hf(lm_model *m, lm_err *err) {
    char *dir = m->src->dir = lm_strdup(m->path);
    if (!dir) return lm_nomem(err, strlen(m->path) + 1, "model directory");
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--) dir[n - 1] = 0; /* "d/" -> "d": clean file names */
    snprintf(m->format, sizeof m->format, "safetensors");
    int rc = lm_config_from_hf(&m->cfg, dir, err);
    if (rc) return rc;
    if ((rc = lm_st_set_open(&m->src->st, dir, err))) return rc;
    return copy_tensors(m, NULL, (const lm_tensor *const *)m->src->st->tensors, (uint64_t)m->src->st->n_tensors, err);
}

/* The GGUF half of lm_model_open. */
static int open_gguf(lm_model *m, lm_err *err) {
    snprintf(m->format, sizeof m->format, "gguf");
    int rc = lm_gguf_open(&m->src->gguf, m->path, err);
    if (rc) return rc;
    if ((rc = lm_config_from_gguf(&m->cfg, m->src->gguf, err))) return rc;
    return copy_tensors(m, m->src->gguf->tensors, NULL, m->src->gguf->n_tensors, err);
}

int lm_model_open(lm_model **out, const char *path, lm_err *err) {
    *out = NULL;
    if (!path || !*path) return lm_fail(err, LM_EARG, "no model path given");
    lm_model *m = lm_calloc(1, sizeof *m);
    if (!m) return lm_nomem(err, sizeof *m, "model");
    int rc = LM_OK;
    struct stat st;
    if (strlen(path) >= sizeof m->path) {
        rc = lm_fail(err, LM_EARG, "%.200s...: model path longer than %zu bytes", path, sizeof m->path - 1);
        goto fail;
    }
    memcpy(m->path, path, strlen(path) + 1);
    set_name(m);
    m->src = lm_calloc(1, sizeof *m->src);
    if (!m->src) {
        rc = lm_nomem(err, sizeof *m->src, "model source");
        goto fail;
    }
    if (stat(path, &st) != 0) {
        rc = lm_fail(err, LM_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = open_hf(m, err);
    } else if (lm_ends_with(path, ".safetensors") || lm_ends_with(path, ".json")) {
        rc = lm_fail(err, LM_EARG, "%s: give the model's directory (with config.json), not one of its files", path);
    } else {
        rc = open_gguf(m, err);
    }
    if (rc) goto fail;
    /* every layer has tensors of its own: a layer count above the number of
     * tensors is corrupt, and its table would be an allocation the file does
     * not justify (fuzz: num_hidden_layers 2e9 asked for 320 GB) */
    if (m->cfg.n_layer > m->n_tensors) {
        rc = LM_CORRUPT(err, "%s: the configuration says %d layers, but the model has only %d tensors", path,
                        m->cfg.n_layer, m->n_tensors);
        goto fail;
    }
    m->layers = lm_calloc((size_t)m->cfg.n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = lm_nomem(err, (size_t)m->cfg.n_layer * sizeof *m->layers, "layer table");
        goto fail;
    }
    if ((rc = bind_model(m, path, err))) goto fail;
    *out = m;
    return LM_OK;
fail:
    lm_model_close(m);
    return rc;
}

void lm_model_close(lm_model *m) {
    if (!m) return;
    if (m->src) {
        lm_st_set_close(m->src->st);
        if (m->src->gguf) lm_gguf_close(m->src->gguf);
        lm_free(m->src->dir);
        lm_free(m->src);
    }
    lm_free(m->layers);
    lm_free(m->tensors);
    lm_free(m);
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

int64_t lm_model_module_params(const lm_model *m, int layer, int module) {
    if (!m || layer < 0 || layer >= m->cfg.n_layer || module < 0 || module >= LM_N_MODULES) return 0;
    const lm_tensor *t = m->layers[layer].w[module];
    if (!t) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const lm_gguf *lm_model_gguf(const lm_model *m) { return m && m->src ? m->src->gguf : NULL; }

const char *lm_model_dir(const lm_model *m) { return m && m->src ? m->src->dir : NULL; }

/* ------------------------------------------------------------------------ */
/* Identity (checkpoints)                                                    */
/* ------------------------------------------------------------------------ */

/* Bytes of a tensor hashed whole, and the blocks sampled from a larger one. */
#define ID_WHOLE (64u << 10)
#define ID_BLOCKS 16
#define ID_BLOCK (4u << 10)

/* See model.h. */
int lm_model_sha256(const lm_model *m, char hex[65], int64_t *bytes, lm_err *err) {
    lm_sha256 h;
    lm_sha256_init(&h);
    if (m->src && m->src->gguf) {
        const lm_gguf *g = m->src->gguf; /* header, metadata, tensor infos: everything before the data */
        lm_sha256_update(&h, g->file.data, (size_t)g->data_offset);
    } else if (m->src && m->src->st) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", m->src->dir);
        char *cfg = NULL;
        size_t n = 0;
        int rc = lm_file_read_all(path, &cfg, &n, err);
        if (rc) return rc;
        lm_sha256_update(&h, cfg, n);
        lm_free(cfg);
        for (int f = 0; f < m->src->st->n_files; f++) { /* each file's 8-byte length and JSON header */
            const lm_file *fl = &m->src->st->files[f]->file;
            uint64_t len = 0;
            for (int i = 7; fl->size >= 8 && i >= 0; i--) len = len << 8 | fl->data[i];
            lm_sha256_update(&h, fl->data, fl->size >= 8 + len ? (size_t)(8 + len) : fl->size);
        }
    }
    int64_t total = 0;
    for (int t = 0; t < m->n_tensors; t++) { /* in name order: the same for any file layout */
        const lm_tensor *x = &m->tensors[t];
        lm_sha256_update(&h, x->name, strlen(x->name) + 1);
        total += (int64_t)x->nbytes;
        if (!x->data) continue;
        if (x->nbytes <= ID_WHOLE) {
            lm_sha256_update(&h, x->data, x->nbytes);
            continue;
        }
        for (int b = 0; b < ID_BLOCKS; b++) { /* first and last block included */
            size_t at = (size_t)((double)(x->nbytes - ID_BLOCK) * b / (ID_BLOCKS - 1));
            lm_sha256_update(&h, x->data + at, ID_BLOCK);
        }
    }
    lm_sha256_hex(&h, hex);
    if (bytes) *bytes = total;
    return LM_OK;
}

/*
 * test_model.c -- lm_model_open over both formats (src/model.c, config.c).
 *
 *  - the shared stories260K checkpoints (HF F32, HF BF16, GGUF F32, GGUF
 *    Q8_0) load with the right description;
 *  - GGUF F32 and HF F32 weights are bit-identical for every tensor of every
 *    layer once lm_tensor_read_rows un-permutes q/k: the proof that the
 *    qk_perm_heads convention is right (a control shows the comparison fails
 *    without it);
 *  - Q8_0 within its quantization bound, BF16 equal to F32 rounded to
 *    nearest-even;
 *  - a sharded copy the test writes loads to identical bytes;
 *  - tiny Qwen2 / Qwen3 / Gemma 3 / Mistral / Llama-3 checkpoints the test
 *    writes (config.json + safetensors, and GGUF) open with the right flags;
 *  - broken checkpoints give the right code and a message naming the file;
 *  - every allocation failure inside lm_model_open gives LM_ENOMEM.
 */
#include "test.h"
#include "fault.h"

#include "model/model.h"

#include <stdint.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

/* buf = scratch_dir()/name */
static const char *scratch(char *buf, size_t n, const char *name) {
    if ((size_t)snprintf(buf, n, "%s/%s", scratch_dir(), name) >= n) {
        fprintf(stderr, "scratch path too long\n");
        exit(2);
    }
    return buf;
}

/* Write n bytes to path; exits on failure (a broken test machine). */
static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
        perror(path);
        exit(2);
    }
}

/* dir/name = text */
static void write_text(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, text, strlen(text));
}

/* Copy dir_from/name to dir_to/name. */
static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    FILE *f = fopen(a, "rb");
    if (!f) {
        perror(a);
        exit(2);
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes(b, buf, n);
}

/* A fresh directory scratch_dir()/name. */
static const char *fresh_dir(char *buf, size_t n, const char *name) {
    scratch(buf, n, name);
    mkdir(buf, 0755);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* A safetensors and GGUF writer for test checkpoints                        */
/* ------------------------------------------------------------------------ */

/* One tensor to write: F32 values from a hash of the name unless data is set. */
typedef struct wtensor {
    char name[128];
    int ndim;
    int64_t shape[2];
    const char *dtype; /* safetensors dtype string; NULL = "F32" */
    const void *data;  /* raw bytes (nbytes), or NULL for generated F32 */
    size_t nbytes;
} wtensor;

typedef struct wlist {
    wtensor t[256];
    int n;
} wlist;

/* Add a generated F32 tensor. */
static void wl_add(wlist *l, const char *name, int64_t a, int64_t b) {
    wtensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    if (strlen(name) >= sizeof t->name) exit(2);
    memcpy(t->name, name, strlen(name) + 1);
    t->ndim = b > 0 ? 2 : 1;
    t->shape[0] = a;
    t->shape[1] = b;
}

/* The tensor called name in l, or NULL. */
static wtensor *wl_find(wlist *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name)) return &l->t[i];
    return NULL;
}

/* Remove the tensor called name; 1 if it was there. */
static int wl_remove(wlist *l, const char *name) {
    wtensor *t = wl_find(l, name);
    if (!t) return 0;
    *t = l->t[--l->n];
    return 1;
}

static int64_t wt_nelem(const wtensor *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

/* Bytes of t as written: given, or generated floats. *owned is set when the
 * caller must free the result. */
static const uint8_t *wt_bytes(const wtensor *t, size_t *n, int *owned) {
    if (t->data) {
        *n = t->nbytes;
        *owned = 0;
        return t->data;
    }
    int64_t k = wt_nelem(t);
    float *v = malloc((size_t)k * 4 + 1);
    uint32_t h = 2166136261u;
    for (const char *c = t->name; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
    for (int64_t i = 0; i < k; i++) {
        h = h * 1664525u + 1013904223u;
        v[i] = ((float)(h >> 8) / 16777216.0f - 0.5f) * 0.2f;
    }
    *n = (size_t)k * 4;
    *owned = 1;
    return (const uint8_t *)v;
}

/* Write l as a safetensors file at path. */
static void write_st(const char *path, const wlist *l) {
    size_t cap = 64 + (size_t)l->n * 256, hl = 0;
    char *h = malloc(cap);
    hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const wtensor *t = &l->t[i];
        size_t n;
        int owned;
        const uint8_t *b = wt_bytes(t, &n, &owned);
        if (owned) free((void *)b);
        char shape[64];
        if (t->ndim == 1)
            snprintf(shape, sizeof shape, "[%lld]", (long long)t->shape[0]);
        else
            snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)t->shape[0], (long long)t->shape[1]);
        hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                               t->name, t->dtype ? t->dtype : "F32", shape, off, off + n);
        off += n;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(h, 1, hl, f);
    for (int i = 0; i < l->n; i++) {
        size_t n;
        int owned;
        const uint8_t *b = wt_bytes(&l->t[i], &n, &owned);
        fwrite(b, 1, n, f);
        if (owned) free((void *)b);
    }
    fclose(f);
    free(h);
}

/* GGUF key-values for the writer: type is 's' string, 'u' uint32, 'f'
 * float32, 'b' bool, 'S' string array of n entries "t0", "t1", ... */
typedef struct gkv {
    const char *key;
    char type;
    const char *s;
    double v;
} gkv;

/* Write a GGUF v3 file: kvs, then l's tensors as F32 (shapes reversed into
 * ggml's ne order), alignment 32. */
static void write_gguf(const char *path, const gkv *kvs, int nkv, const wlist *l) {
    FILE *f = fopen(path, "wb");
    uint32_t u32;
    uint64_t u64;
#define W(x) fwrite(&(x), sizeof(x), 1, f)
#define WSTR(str)                                                                                                      \
    do {                                                                                                               \
        u64 = strlen(str);                                                                                             \
        W(u64);                                                                                                        \
        fwrite((str), 1, (size_t)u64, f);                                                                              \
    } while (0)
    fwrite("GGUF", 1, 4, f);
    u32 = 3;
    W(u32);
    u64 = (uint64_t)l->n;
    W(u64);
    u64 = (uint64_t)nkv;
    W(u64);
    for (int i = 0; i < nkv; i++) {
        WSTR(kvs[i].key);
        switch (kvs[i].type) {
        case 's':
            u32 = 8;
            W(u32);
            WSTR(kvs[i].s);
            break;
        case 'u':
            u32 = 4;
            W(u32);
            u32 = (uint32_t)kvs[i].v;
            W(u32);
            break;
        case 'f': {
            u32 = 6;
            W(u32);
            float x = (float)kvs[i].v;
            W(x);
        } break;
        case 'b': {
            u32 = 7;
            W(u32);
            uint8_t x = kvs[i].v != 0;
            W(x);
        } break;
        case 'S': {
            u32 = 9;
            W(u32);
            u32 = 8;
            W(u32);
            u64 = (uint64_t)kvs[i].v;
            W(u64);
            for (int j = 0; j < (int)kvs[i].v; j++) {
                char s[16];
                snprintf(s, sizeof s, "t%d", j);
                WSTR(s);
            }
        } break;
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const wtensor *t = &l->t[i];
        WSTR(t->name);
        u32 = (uint32_t)t->ndim;
        W(u32);
        for (int d = t->ndim - 1; d >= 0; d--) {
            u64 = (uint64_t)t->shape[d];
            W(u64);
        }
        u32 = 0; /* GGML_TYPE_F32 */
        W(u32);
        W(off);
        off += ((uint64_t)wt_nelem(t) * 4 + 31) / 32 * 32;
    }
    long pos = ftell(f);
    while (pos % 32) fputc(0, f), pos++;
    for (int i = 0; i < l->n; i++) {
        size_t n;
        int owned;
        const uint8_t *b = wt_bytes(&l->t[i], &n, &owned);
        fwrite(b, 1, n, f);
        while (n % 32) fputc(0, f), n++;
        if (owned) free((void *)b);
    }
    fclose(f);
#undef W
#undef WSTR
}

/* ------------------------------------------------------------------------ */
/* Tiny checkpoints                                                          */
/* ------------------------------------------------------------------------ */

/* Shape of a tiny model and which optional tensors it has. */
typedef struct tiny {
    int L, dim, nh, nkv, hd, ffn, vocab;
    int qkv_bias, qk_norm, post_norms, lm_head;
    const char *prefix; /* "model." etc. (HF) */
    const char *head;   /* lm_head name (HF) */
} tiny;

/* HF tensor list of a tiny model (gemma names when post_norms). */
static void tiny_hf(wlist *l, const tiny *t) {
    char n[160];
    l->n = 0;
    int64_t q = (int64_t)t->nh * t->hd, kv = (int64_t)t->nkv * t->hd;
    snprintf(n, sizeof n, "%sembed_tokens.weight", t->prefix);
    wl_add(l, n, t->vocab, t->dim);
    snprintf(n, sizeof n, "%snorm.weight", t->prefix);
    wl_add(l, n, t->dim, 0);
    if (t->lm_head) wl_add(l, t->head, t->vocab, t->dim);
    for (int i = 0; i < t->L; i++) {
#define LN(suffix) (snprintf(n, sizeof n, "%slayers.%d.%s", t->prefix, i, suffix), n)
        wl_add(l, LN("input_layernorm.weight"), t->dim, 0);
        wl_add(l, LN("post_attention_layernorm.weight"), t->dim, 0);
        if (t->post_norms) {
            wl_add(l, LN("pre_feedforward_layernorm.weight"), t->dim, 0);
            wl_add(l, LN("post_feedforward_layernorm.weight"), t->dim, 0);
        }
        wl_add(l, LN("self_attn.q_proj.weight"), q, t->dim);
        wl_add(l, LN("self_attn.k_proj.weight"), kv, t->dim);
        wl_add(l, LN("self_attn.v_proj.weight"), kv, t->dim);
        wl_add(l, LN("self_attn.o_proj.weight"), t->dim, q);
        if (t->qkv_bias) {
            wl_add(l, LN("self_attn.q_proj.bias"), q, 0);
            wl_add(l, LN("self_attn.k_proj.bias"), kv, 0);
            wl_add(l, LN("self_attn.v_proj.bias"), kv, 0);
        }
        if (t->qk_norm) {
            wl_add(l, LN("self_attn.q_norm.weight"), t->hd, 0);
            wl_add(l, LN("self_attn.k_norm.weight"), t->hd, 0);
        }
        wl_add(l, LN("mlp.gate_proj.weight"), t->ffn, t->dim);
        wl_add(l, LN("mlp.up_proj.weight"), t->ffn, t->dim);
        wl_add(l, LN("mlp.down_proj.weight"), t->dim, t->ffn);
#undef LN
    }
}

/* GGUF tensor list of a tiny model (llama.cpp names). */
static void tiny_gguf(wlist *l, const tiny *t) {
    char n[160];
    l->n = 0;
    int64_t q = (int64_t)t->nh * t->hd, kv = (int64_t)t->nkv * t->hd;
    wl_add(l, "token_embd.weight", t->vocab, t->dim);
    wl_add(l, "output_norm.weight", t->dim, 0);
    if (t->lm_head) wl_add(l, "output.weight", t->vocab, t->dim);
    for (int i = 0; i < t->L; i++) {
#define LN(suffix) (snprintf(n, sizeof n, "blk.%d.%s", i, suffix), n)
        wl_add(l, LN("attn_norm.weight"), t->dim, 0);
        wl_add(l, LN("ffn_norm.weight"), t->dim, 0);
        if (t->post_norms) {
            wl_add(l, LN("post_attention_norm.weight"), t->dim, 0);
            wl_add(l, LN("post_ffw_norm.weight"), t->dim, 0);
        }
        wl_add(l, LN("attn_q.weight"), q, t->dim);
        wl_add(l, LN("attn_k.weight"), kv, t->dim);
        wl_add(l, LN("attn_v.weight"), kv, t->dim);
        wl_add(l, LN("attn_output.weight"), t->dim, q);
        if (t->qkv_bias) {
            wl_add(l, LN("attn_q.bias"), q, 0);
            wl_add(l, LN("attn_k.bias"), kv, 0);
            wl_add(l, LN("attn_v.bias"), kv, 0);
        }
        if (t->qk_norm) {
            wl_add(l, LN("attn_q_norm.weight"), t->hd, 0);
            wl_add(l, LN("attn_k_norm.weight"), t->hd, 0);
        }
        wl_add(l, LN("ffn_gate.weight"), t->ffn, t->dim);
        wl_add(l, LN("ffn_up.weight"), t->ffn, t->dim);
        wl_add(l, LN("ffn_down.weight"), t->dim, t->ffn);
#undef LN
    }
}

/* Write an HF checkpoint directory scratch/name with config text and l. */
static const char *write_hf(char *dir, size_t n, const char *name, const char *config, const wlist *l) {
    fresh_dir(dir, n, name);
    if (config) write_text(dir, "config.json", config);
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, l);
    return dir;
}

/* ------------------------------------------------------------------------ */
/* Helpers over models                                                       */
/* ------------------------------------------------------------------------ */

/* Open path, expecting success. */
static lm_model *open_ok(const char *path) {
    lm_model *m = NULL;
    lm_err err = {0};
    int rc = lm_model_open(&m, path, &err);
    CHECK(rc == LM_OK, "open %s: %d %s", path, rc, err.msg);
    return rc ? NULL : m;
}

/* Open path, expecting failure code want with a message that names the path
 * (or file under it) and contains each of parts[]. */
static void open_fails(const char *path, int want, const char *part1, const char *part2, const char *what) {
    lm_model *m = NULL;
    lm_err err = {0};
    int rc = lm_model_open(&m, path, &err);
    CHECK(rc == want, "%s: code %d (%s), want %d (%s)", what, rc, lm_strerror(rc), want, rc ? err.msg : "opened");
    CHECK(rc == LM_OK || m == NULL, "%s: *out set on failure", what);
    if (rc) {
        CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what, err.msg);
        if (part1) CHECK(strstr(err.msg, part1) != NULL, "%s: message lacks '%s': %s", what, part1, err.msg);
        if (part2) CHECK(strstr(err.msg, part2) != NULL, "%s: message lacks '%s': %s", what, part2, err.msg);
    }
    lm_model_close(m);
}

/* All of t as floats (rows x cols, HF row order); caller frees. */
static float *read_all(const lm_tensor *t, int64_t *n) {
    lm_err err = {0};
    int64_t rows = lm_tensor_rows(t), cols = lm_tensor_cols(t);
    float *v = malloc((size_t)(rows * cols) * sizeof *v + 1);
    int rc = lm_tensor_read_rows(t, 0, rows, v, &err);
    CHECK(rc == LM_OK, "read %s: %s", t->name, err.msg);
    *n = rows * cols;
    return v;
}

/* Every weight of a model with a label: embedding, final norm, head, and per
 * layer the norms and the seven modules. */
typedef struct wref {
    char label[48];
    const lm_tensor *t;
} wref;

static int model_weights(const lm_model *m, wref *out) {
    int k = 0;
    snprintf(out[k].label, sizeof out[k].label, "tok_embd"), out[k++].t = m->tok_embd;
    snprintf(out[k].label, sizeof out[k].label, "out_norm"), out[k++].t = m->out_norm;
    snprintf(out[k].label, sizeof out[k].label, "output"), out[k++].t = m->output;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        snprintf(out[k].label, sizeof out[k].label, "L%d attn_norm", l), out[k++].t = m->layers[l].attn_norm;
        snprintf(out[k].label, sizeof out[k].label, "L%d ffn_norm", l), out[k++].t = m->layers[l].ffn_norm;
        for (int mo = 0; mo < LM_N_MODULES; mo++)
            snprintf(out[k].label, sizeof out[k].label, "L%d %s", l, lm_module_names[mo]),
                out[k++].t = m->layers[l].w[mo];
    }
    return k;
}

/* ------------------------------------------------------------------------ */
/* The shared checkpoints                                                    */
/* ------------------------------------------------------------------------ */

/* The stories260K description, whatever the format. */
static void check_stories_cfg(const lm_model *m, const char *format) {
    const lm_config *c = &m->cfg;
    CHECK(!strcmp(m->format, format), "%s: format %s", m->name, m->format);
    CHECK(c->arch == LM_ARCH_LLAMA && !strcmp(lm_arch_name(c->arch), "llama"), "%s: arch", m->name);
    CHECK(c->n_layer == 5 && c->dim == 64 && c->n_head == 8 && c->n_kv_head == 4 && c->head_dim == 8,
          "%s: sizes %d %d %d %d %d", m->name, c->n_layer, c->dim, c->n_head, c->n_kv_head, c->head_dim);
    CHECK(c->ffn_dim == 172 && c->vocab == 512 && c->max_pos == 512, "%s: ffn %d vocab %d max_pos %d", m->name,
          c->ffn_dim, c->vocab, c->max_pos);
    CHECK(c->tie_embeddings && m->output == m->tok_embd, "%s: tied", m->name);
    CHECK_CLOSE(c->rope_theta, 10000.0, 0, 0, "rope_theta");
    CHECK_CLOSE(c->rope_theta_local, 10000.0, 0, 0, "rope_theta_local");
    CHECK(c->rope_type == 0, "%s: no rope scaling", m->name);
    CHECK_CLOSE(c->norm_eps, 1e-5, 1e-12, 0, "norm_eps");
    CHECK_CLOSE(c->attn_scale, 1.0 / sqrt(8.0), 1e-7, 0, "attn_scale");
    CHECK(c->embed_scale == 1.0f && c->act == LM_ACT_SILU && !c->norm_add_one, "%s: llama defaults", m->name);
    CHECK(!c->has_qkv_bias && !c->has_qk_norm && !c->has_post_norms && !c->sliding_window, "%s: no extras", m->name);
    CHECK(c->bos_id == 1 && c->eos_id == 2 && c->add_bos == 1, "%s: bos %d eos %d add_bos %d", m->name, c->bos_id,
          c->eos_id, c->add_bos);
    CHECK(m->n_tensors == 47, "%s: %d tensors", m->name, m->n_tensors);
    for (int l = 0; l < 5; l++) {
        const lm_layer_weights *L = &m->layers[l];
        CHECK(L->attn_norm && L->ffn_norm && !L->post_attn_norm && !L->post_ffn_norm && !L->q_norm && !L->k_norm,
              "%s L%d norms", m->name, l);
        for (int mo = 0; mo < LM_N_MODULES; mo++)
            CHECK(L->w[mo] && !L->bias[mo], "%s L%d %s", m->name, l, lm_module_names[mo]);
    }
    CHECK(lm_model_module_params(m, 0, LM_MOD_Q) == 64 * 64 && lm_model_module_params(m, 4, LM_MOD_K) == 32 * 64 &&
              lm_model_module_params(m, 2, LM_MOD_DOWN) == 64 * 172 &&
              lm_model_module_params(m, 1, LM_MOD_GATE) == 172 * 64,
          "%s: module params", m->name);
    CHECK(lm_model_module_params(m, 5, 0) == 0 && lm_model_module_params(m, -1, 0) == 0 &&
              lm_model_module_params(m, 0, LM_N_MODULES) == 0,
          "%s: out-of-range params are 0", m->name);
    int gguf = !strcmp(format, "gguf");
    CHECK(m->layers[0].w[LM_MOD_Q]->qk_perm_heads == (gguf ? 8 : 0) &&
              m->layers[3].w[LM_MOD_K]->qk_perm_heads == (gguf ? 4 : 0),
          "%s: qk_perm_heads q %d k %d", m->name, m->layers[0].w[LM_MOD_Q]->qk_perm_heads,
          m->layers[3].w[LM_MOD_K]->qk_perm_heads);
    for (int mo = LM_MOD_V; mo < LM_N_MODULES; mo++)
        CHECK(m->layers[0].w[mo]->qk_perm_heads == 0, "%s: %s not permuted", m->name, lm_module_names[mo]);
}

static void test_stories(void) {
    char p[512];
    static const struct {
        const char *rel, *format, *name;
    } files[] = {{"stories260K-hf", "safetensors", "stories260K-hf"},
                 {"stories260K-hf-bf16", "safetensors", "stories260K-hf-bf16"},
                 {"stories260K.gguf", "gguf", "stories260K"},
                 {"stories260K-q8_0.gguf", "gguf", "stories260K-q8_0"}};
    for (int i = 0; i < 4; i++) {
        lm_model *m = open_ok(model_path(p, sizeof p, files[i].rel));
        if (!m) continue;
        CHECK(!strcmp(m->name, files[i].name), "name '%s', want '%s'", m->name, files[i].name);
        CHECK(!strcmp(m->path, p), "path kept");
        check_stories_cfg(m, files[i].format);
        const lm_tensor *t =
            lm_model_find(m, files[i].format[0] == 'g' ? "blk.2.ffn_up.weight" : "model.layers.2.mlp.up_proj.weight");
        CHECK(t == m->layers[2].w[LM_MOD_UP], "lm_model_find gives the bound tensor");
        CHECK(lm_model_find(m, "nope") == NULL, "lm_model_find absent");
        if (files[i].format[0] == 'g') {
            const lm_gguf *g = lm_model_gguf(m);
            CHECK(g != NULL && lm_model_dir(m) == NULL, "gguf accessors");
        } else {
            CHECK(lm_model_gguf(m) == NULL && lm_model_dir(m) && !strcmp(lm_model_dir(m), p), "hf accessors");
        }
        lm_model_close(m);
    }
    /* a trailing slash changes nothing */
    char q[520];
    snprintf(q, sizeof q, "%s/", model_path(p, sizeof p, "stories260K-hf"));
    lm_model *m = open_ok(q);
    if (m) {
        CHECK(!strcmp(m->name, "stories260K-hf"), "name with trailing slash: %s", m->name);
        CHECK(!strcmp(m->path, q) && !strcmp(lm_model_dir(m), p), "path as given, directory without the slash");
        CHECK(strstr(m->tok_embd->path, "//") == NULL, "file names clean: %s", m->tok_embd->path);
    }
    lm_model_close(m);
}

/* GGUF F32 vs HF F32, bit for bit, every weight; plus the control. */
static void test_gguf_equals_hf(void) {
    char p[512];
    lm_model *h = open_ok(model_path(p, sizeof p, "stories260K-hf"));
    lm_model *g = open_ok(model_path(p, sizeof p, "stories260K.gguf"));
    if (!h || !g) goto done;
    wref a[128], b[128];
    int n = model_weights(h, a);
    CHECK(model_weights(g, b) == n, "same weight count");
    int compared = 0;
    for (int i = 0; i < n; i++) {
        int64_t na, nb;
        CHECK(lm_tensor_rows(a[i].t) == lm_tensor_rows(b[i].t) && lm_tensor_cols(a[i].t) == lm_tensor_cols(b[i].t),
              "%s: shapes agree", a[i].label);
        float *x = read_all(a[i].t, &na), *y = read_all(b[i].t, &nb);
        CHECK(na == nb && memcmp(x, y, (size_t)na * 4) == 0, "%s: GGUF %s != HF %s", a[i].label, b[i].t->name,
              a[i].t->name);
        compared += na == nb;
        free(x);
        free(y);
    }
    CHECK(compared == 3 + 5 * 9, "compared %d weights", compared);

    /* control: without the un-permutation q and k differ from HF */
    for (int mo = LM_MOD_Q; mo <= LM_MOD_K; mo++) {
        lm_tensor raw = *g->layers[1].w[mo];
        raw.qk_perm_heads = 0;
        int64_t na, nb;
        float *x = read_all(h->layers[1].w[mo], &na), *y = read_all(&raw, &nb);
        CHECK(memcmp(x, y, (size_t)na * 4) != 0, "control: stored %s rows equal HF rows, the test could not fail",
              lm_module_names[mo]);
        free(x);
        free(y);
    }
done:
    lm_model_close(h);
    lm_model_close(g);
}

/* fp16 rounding of a positive normal float, as ggml stores a Q8_0 scale. */
static float to_f16_and_back(float d) {
    int e;
    double m = frexp(d, &e);                   /* d = m 2^e, m in [0.5, 1) */
    double q = nearbyint(m * 2048.0) / 2048.0; /* 11 significant bits */
    return (float)ldexp(q, e);
}

/* Q8_0 vs F32. ggml's quantizer: per block of 32 along a row, d = amax/127,
 * q = round(x/d) in [-127, 127], d stored as fp16 (relative error <= 2^-11).
 * Dequantized x' = q * fp16(d), so
 *   |x - x'| <= |x - q d| + |q| |d - fp16(d)| <= d/2 + 127 d 2^-11 = 0.562 d.
 * The test uses 0.5 d + 127 |d - fp16(d)| (computed per block) + 1e-6 d. */
static void test_q8_bound(void) {
    char p[512];
    lm_model *h = open_ok(model_path(p, sizeof p, "stories260K-hf"));
    lm_model *g = open_ok(model_path(p, sizeof p, "stories260K-q8_0.gguf"));
    if (!h || !g) goto done;
    wref a[128], b[128];
    int n = model_weights(h, a);
    model_weights(g, b);
    int n_q8 = 0, n_exact = 0;
    double worst_ratio = 0;
    for (int i = 0; i < n; i++) {
        int64_t na, nb, cols = lm_tensor_cols(a[i].t);
        float *x = read_all(a[i].t, &na), *y = read_all(b[i].t, &nb);
        if (b[i].t->dtype != LM_DT_Q8_0) {
            CHECK(b[i].t->dtype == LM_DT_F32 && memcmp(x, y, (size_t)na * 4) == 0, "%s: F32 in the Q8_0 file equals HF",
                  a[i].label);
            n_exact++;
        } else {
            n_q8++;
            int bad = 0;
            for (int64_t s = 0; s < na; s += 32) {
                CHECK(cols % 32 == 0, "%s: cols %lld", a[i].label, (long long)cols);
                double amax = 0;
                for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(x[s + j]));
                float d = (float)(amax / 127.0);
                double bound = 0.5 * d + 127.0 * fabs((double)d - to_f16_and_back(d)) + 1e-6 * d;
                for (int j = 0; j < 32; j++) {
                    double e = fabs((double)x[s + j] - y[s + j]);
                    if (e > bound) bad++;
                    if (bound > 0) worst_ratio = fmax(worst_ratio, e / d);
                }
            }
            CHECK(bad == 0, "%s: %d elements beyond the Q8_0 bound", a[i].label, bad);
        }
        free(x);
        free(y);
    }
    /* tied head counted with the embedding; ffn_down (172 cols) and norms stay F32 */
    CHECK(n_q8 == 2 + 5 * 6 && n_exact == 1 + 5 * 3, "Q8_0 tensors %d, F32 tensors %d", n_q8, n_exact);
    /* the bound is tight, not vacuous: observed errors reach close to d/2 */
    CHECK(worst_ratio > 0.45 && worst_ratio <= 0.5625, "worst |err|/d = %.4f", worst_ratio);
done:
    lm_model_close(h);
    lm_model_close(g);
}

/* BF16 vs F32: the BF16 checkpoint is the F32 one rounded to nearest-even,
 * so every element is exactly that rounding (hence within 2^-8 relative). */
static void test_bf16(void) {
    char p[512];
    lm_model *h = open_ok(model_path(p, sizeof p, "stories260K-hf"));
    lm_model *b = open_ok(model_path(p, sizeof p, "stories260K-hf-bf16"));
    if (!h || !b) goto done;
    wref x[128], y[128];
    int n = model_weights(h, x);
    model_weights(b, y);
    int64_t differ = 0, total = 0, not_rne = 0, beyond = 0;
    for (int i = 0; i < n; i++) {
        CHECK(y[i].t->dtype == LM_DT_BF16, "%s: bf16", y[i].label);
        int64_t na, nb;
        float *f = read_all(x[i].t, &na), *g = read_all(y[i].t, &nb);
        for (int64_t k = 0; k < na; k++) {
            uint32_t u;
            memcpy(&u, &f[k], 4);
            u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
            float r;
            memcpy(&r, &u, 4);
            not_rne += memcmp(&r, &g[k], 4) != 0;
            beyond += fabs((double)g[k] - f[k]) > ldexp(fabs(f[k]), -8);
            differ += g[k] != f[k];
            total++;
        }
        free(f);
        free(g);
    }
    CHECK(not_rne == 0, "%lld of %lld bf16 values are not F32 rounded to nearest-even", (long long)not_rne,
          (long long)total);
    CHECK(beyond == 0, "%lld values beyond 2^-8 relative", (long long)beyond);
    CHECK(differ > total / 2, "bf16 really differs from f32 (%lld of %lld)", (long long)differ, (long long)total);
done:
    lm_model_close(h);
    lm_model_close(b);
}

/* stories260K-hf split into 3 shards + index by the test: same bytes. */
static void test_sharded(void) {
    char src[512], d[512], p[1024];
    model_path(src, sizeof src, "stories260K-hf");
    lm_model *h = open_ok(src);
    if (!h) return;
    fresh_dir(d, sizeof d, "stories-sharded");
    copy_file(src, d, "config.json");
    copy_file(src, d, "tokenizer_config.json");
    char *index = malloc(65536);
    size_t il = (size_t)snprintf(index, 65536, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    for (int s = 0; s < 3; s++) {
        wlist *l = calloc(1, sizeof *l);
        char shard[64];
        snprintf(shard, sizeof shard, "model-%05d-of-00003.safetensors", s + 1);
        for (int i = s; i < h->n_tensors; i += 3) {
            const lm_tensor *t = &h->tensors[i];
            wtensor *w = &l->t[l->n++];
            memset(w, 0, sizeof *w);
            snprintf(w->name, sizeof w->name, "%s", t->name);
            w->ndim = t->ndim;
            w->shape[0] = t->shape[0];
            w->shape[1] = t->ndim > 1 ? t->shape[1] : 0;
            w->data = t->data;
            w->nbytes = t->nbytes;
            il += (size_t)snprintf(index + il, 65536 - il, "%s\"%s\":\"%s\"", il > 60 ? "," : "", t->name, shard);
        }
        snprintf(p, sizeof p, "%s/%s", d, shard);
        write_st(p, l);
        free(l);
    }
    snprintf(index + il, 65536 - il, "}}");
    write_text(d, "model.safetensors.index.json", index);
    free(index);

    lm_model *s = open_ok(d);
    if (s) {
        check_stories_cfg(s, "safetensors");
        int same = 0, shards_seen = 0;
        const char *paths[3] = {0};
        for (int i = 0; i < s->n_tensors; i++) {
            const lm_tensor *a = &s->tensors[i], *b = lm_model_find(h, a->name);
            same += b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes) && a->data != b->data;
            int k = 0;
            while (k < shards_seen && strcmp(paths[k], a->path)) k++;
            if (k == shards_seen && k < 3) paths[shards_seen++] = a->path;
        }
        CHECK(same == h->n_tensors && s->n_tensors == h->n_tensors, "sharded: %d of %d tensors identical", same,
              h->n_tensors);
        CHECK(shards_seen == 3, "tensors come from 3 files (%d)", shards_seen);
        lm_model_close(s);
    }
    lm_model_close(h);
}

/* ------------------------------------------------------------------------ */
/* Tiny architectures                                                        */
/* ------------------------------------------------------------------------ */

static void test_qwen2(void) {
    char d[512];
    wlist *l = calloc(1, sizeof *l);
    tiny t = {2, 32, 4, 2, 8, 48, 40, 1, 0, 0, 1, "model.", "lm_head.weight"};
    tiny_hf(l, &t);
    write_hf(d, sizeof d, "qwen2",
             "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"hidden_size\":32,"
             "\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"vocab_size\":40,\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-06,\"tie_word_embeddings\":false,"
             "\"use_sliding_window\":false,\"sliding_window\":4096,\"max_window_layers\":21,\"bos_token_id\":37,"
             "\"eos_token_id\":38,\"hidden_act\":\"silu\"}",
             l);
    lm_model *m = open_ok(d);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_QWEN2 && c->has_qkv_bias && !c->has_qk_norm && !c->tie_embeddings, "qwen2 flags");
        CHECK(c->head_dim == 8 && c->n_kv_head == 2 && c->add_bos == 0 && c->bos_id == 37 && c->eos_id == 38,
              "qwen2 fields");
        CHECK(!c->sliding_window && c->rope_theta == 1e6f && c->max_pos == 32768,
              "qwen2 window off, theta, default max_pos");
        CHECK(m->output != m->tok_embd && !strcmp(m->output->name, "lm_head.weight"), "qwen2 separate head");
        const lm_layer_weights *L = &m->layers[1];
        CHECK(L->bias[LM_MOD_Q] && L->bias[LM_MOD_Q]->shape[0] == 32 && L->bias[LM_MOD_K]->shape[0] == 16 &&
                  L->bias[LM_MOD_V] && !L->bias[LM_MOD_O] && !L->bias[LM_MOD_UP],
              "qwen2 biases bound");
        lm_model_close(m);
    }
    /* a missing bias is a missing required tensor */
    wl_remove(l, "model.layers.1.self_attn.k_proj.bias");
    write_hf(d, sizeof d, "qwen2-nobias",
             "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":32,"
             "\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"vocab_size\":40}",
             l);
    open_fails(d, LM_ECORRUPT, "model.layers.1.self_attn.k_proj.bias", "missing", "qwen2 without a bias");

    /* the same model as GGUF: no q/k permutation for qwen2 (NEOX RoPE) */
    tiny_gguf(l, &t);
    gkv kv[] = {{"general.architecture", 's', "qwen2", 0}, {"qwen2.block_count", 'u', 0, 2},
                {"qwen2.embedding_length", 'u', 0, 32},    {"qwen2.feed_forward_length", 'u', 0, 48},
                {"qwen2.attention.head_count", 'u', 0, 4}, {"qwen2.attention.head_count_kv", 'u', 0, 2},
                {"qwen2.rope.freq_base", 'f', 0, 1e6},     {"qwen2.attention.layer_norm_rms_epsilon", 'f', 0, 1e-6},
                {"qwen2.context_length", 'u', 0, 4096},    {"tokenizer.ggml.model", 's', "gpt2", 0},
                {"tokenizer.ggml.tokens", 'S', 0, 40},     {"tokenizer.ggml.eos_token_id", 'u', 0, 38}};
    char p[1024];
    scratch(p, sizeof p, "qwen2.gguf");
    write_gguf(p, kv, (int)(sizeof kv / sizeof kv[0]), l);
    m = open_ok(p);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_QWEN2 && c->has_qkv_bias && c->vocab == 40 && c->max_pos == 4096, "qwen2 gguf cfg");
        CHECK(c->add_bos == 0 && c->bos_id == -1 && c->eos_id == 38, "qwen2 gguf: gpt2 tokenizer adds no BOS");
        CHECK(m->layers[0].w[LM_MOD_Q]->qk_perm_heads == 0 && m->layers[0].w[LM_MOD_K]->qk_perm_heads == 0,
              "qwen2 gguf: no q/k permutation");
        CHECK(m->layers[1].bias[LM_MOD_V] != NULL && m->output != m->tok_embd, "qwen2 gguf tensors bound");
        lm_model_close(m);
    }
    free(l);
}

static void test_qwen3(void) {
    char d[512];
    wlist *l = calloc(1, sizeof *l);
    tiny t = {3, 32, 4, 2, 16, 40, 50, 0, 1, 0, 0, "model.", "lm_head.weight"}; /* head_dim 16 != 32/4 */
    tiny_hf(l, &t);
    const char *cfg = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":40,"
                      "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,"
                      "\"vocab_size\":50,\"tie_word_embeddings\":true,\"rope_theta\":1000000,\"attention_bias\":false}";
    write_hf(d, sizeof d, "qwen3", cfg, l);
    write_text(d, "tokenizer_config.json", "{\"add_bos_token\":false,\"bos_token\":null}");
    lm_model *m = open_ok(d);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_QWEN3 && c->has_qk_norm && !c->has_qkv_bias && c->head_dim == 16, "qwen3 flags");
        CHECK_CLOSE(c->attn_scale, 0.25, 1e-7, 0, "qwen3 attn_scale = 1/sqrt(16)");
        CHECK(c->tie_embeddings && m->output == m->tok_embd && c->add_bos == 0, "qwen3 tied");
        const lm_layer_weights *L = &m->layers[2];
        CHECK(L->q_norm && L->q_norm->shape[0] == 16 && L->k_norm && L->w[LM_MOD_Q]->shape[0] == 64 &&
                  L->w[LM_MOD_O]->shape[1] == 64,
              "qwen3 q/k norms and q/o shapes");
        lm_model_close(m);
    }
    /* head_dim absent: Qwen3's class default is 128, so the q shape is wrong */
    write_hf(d, sizeof d, "qwen3-nohd",
             "{\"architectures\":[\"Qwen3ForCausalLM\"],\"hidden_size\":32,"
             "\"intermediate_size\":40,\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"vocab_size\":50}",
             l);
    open_fails(d, LM_ESHAPE, "q_norm.weight': shape [16], expected [128]", "head_dim=128", "qwen3 default head_dim");

    /* GGUF: key_length gives head_dim; no permutation */
    char p[1024];
    tiny_gguf(l, &t);
    gkv kv[] = {{"general.architecture", 's', "qwen3", 0},
                {"qwen3.block_count", 'u', 0, 3},
                {"qwen3.embedding_length", 'u', 0, 32},
                {"qwen3.feed_forward_length", 'u', 0, 40},
                {"qwen3.attention.head_count", 'u', 0, 4},
                {"qwen3.attention.head_count_kv", 'u', 0, 2},
                {"qwen3.attention.key_length", 'u', 0, 16},
                {"qwen3.attention.value_length", 'u', 0, 16},
                {"qwen3.attention.layer_norm_rms_epsilon", 'f', 0, 1e-6}};
    scratch(p, sizeof p, "qwen3.gguf");
    write_gguf(p, kv, (int)(sizeof kv / sizeof kv[0]), l);
    m = open_ok(p);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_QWEN3 && c->head_dim == 16 && c->vocab == 50 && c->has_qk_norm, "qwen3 gguf cfg");
        CHECK(m->layers[0].w[LM_MOD_Q]->qk_perm_heads == 0 && m->layers[0].q_norm,
              "qwen3 gguf: no permutation, q_norm");
        CHECK(c->add_bos == 1 && c->rope_theta == 10000.0f, "qwen3 gguf defaults (no tokenizer model: SPM default)");
        lm_model_close(m);
    }
    free(l);
}

/* Gemma 3: text-only, layer_types, multimodal prefixes, GGUF. */
static void test_gemma3(void) {
    char d[512];
    wlist *l = calloc(1, sizeof *l);
    tiny t = {7, 32, 4, 1, 16, 48, 60, 0, 1, 1, 0, "model.", "lm_head.weight"};
    tiny_hf(l, &t);
    write_hf(
        d, sizeof d, "gemma3",
        "{\"architectures\":[\"Gemma3ForCausalLM\"],\"model_type\":\"gemma3_text\","
        "\"hidden_size\":32,\"intermediate_size\":48,\"num_hidden_layers\":7,\"num_attention_heads\":4,"
        "\"num_key_value_heads\":1,\"head_dim\":16,\"vocab_size\":60,\"query_pre_attn_scalar\":24,"
        "\"sliding_window\":16,\"sliding_window_pattern\":3,\"rope_theta\":100000.0,\"rope_local_base_freq\":5000.0,"
        "\"rms_norm_eps\":1e-06,\"hidden_activation\":\"gelu_pytorch_tanh\",\"final_logit_softcapping\":null,"
        "\"attn_logit_softcapping\":null,\"max_position_embeddings\":1024}",
        l);
    lm_model *m = open_ok(d);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_GEMMA3 && c->has_qk_norm && c->has_post_norms && c->norm_add_one == 1, "gemma3 flags");
        CHECK(c->act == LM_ACT_GELU_TANH && c->tie_embeddings && m->output == m->tok_embd,
              "gemma3 act, tied by default");
        CHECK_CLOSE(c->attn_scale, 1.0 / sqrt(24.0), 1e-7, 0, "gemma3 attn_scale = query_pre_attn_scalar^-0.5");
        CHECK_CLOSE(c->embed_scale, sqrt(32.0), 1e-6, 0, "gemma3 embed_scale = sqrt(dim)");
        CHECK(c->sliding_window == 16 && c->sliding_pattern == 3, "gemma3 window %d pattern %d", c->sliding_window,
              c->sliding_pattern);
        CHECK(c->rope_theta == 1e5f && c->rope_theta_local == 5000.0f, "gemma3 rope bases");
        CHECK(c->bos_id == 2 && c->eos_id == 1 && c->add_bos == 1, "gemma3 token defaults");
        const lm_layer_weights *L = &m->layers[6];
        CHECK(L->post_attn_norm && strstr(L->post_attn_norm->name, "post_attention_layernorm") && L->ffn_norm &&
                  strstr(L->ffn_norm->name, "pre_feedforward_layernorm") && L->post_ffn_norm &&
                  strstr(L->post_ffn_norm->name, "post_feedforward_layernorm"),
              "gemma3 norm mapping (post_attention_layernorm is the post-attention norm)");
        lm_model_close(m);
    }
    /* layer_types (transformers >= 4.5x) and rope_parameters per layer type */
    write_hf(d, sizeof d, "gemma3-lt",
             "{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_size\":32,"
             "\"intermediate_size\":48,\"num_hidden_layers\":7,\"num_attention_heads\":4,\"num_key_value_heads\":1,"
             "\"head_dim\":16,\"vocab_size\":60,\"sliding_window\":16,\"layer_types\":[\"sliding_attention\","
             "\"sliding_attention\",\"full_attention\",\"sliding_attention\",\"sliding_attention\",\"full_attention\","
             "\"sliding_attention\"],\"rope_parameters\":{\"full_attention\":{\"rope_type\":\"linear\",\"factor\":8.0,"
             "\"rope_theta\":1000000.0},\"sliding_attention\":{\"rope_type\":\"default\",\"rope_theta\":10000.0}}}",
             l);
    m = open_ok(d);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->sliding_pattern == 3 && c->sliding_window == 16, "layer_types -> pattern %d", c->sliding_pattern);
        CHECK(c->rope_type == 1 && c->rope_factor == 8.0f && c->rope_theta == 1e6f && c->rope_theta_local == 1e4f,
              "rope_parameters per layer type");
        CHECK_CLOSE(c->attn_scale, 1.0 / 16.0, 1e-7, 0, "default query_pre_attn_scalar 256");
        lm_model_close(m);
    }
    write_hf(
        d, sizeof d, "gemma3-lt-bad",
        "{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_size\":32,"
        "\"intermediate_size\":48,\"num_hidden_layers\":7,\"num_attention_heads\":4,\"num_key_value_heads\":1,"
        "\"head_dim\":16,\"vocab_size\":60,\"layer_types\":[\"sliding_attention\",\"full_attention\","
        "\"full_attention\",\"sliding_attention\",\"sliding_attention\",\"full_attention\",\"sliding_attention\"]}",
        l);
    open_fails(d, LM_EUNSUPPORTED, "layer_types", "periodic", "gemma3 aperiodic layer types");
    write_hf(d, sizeof d, "gemma3-softcap",
             "{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_size\":32,"
             "\"intermediate_size\":48,\"num_hidden_layers\":7,\"num_attention_heads\":4,\"num_key_value_heads\":1,"
             "\"head_dim\":16,\"vocab_size\":60,\"final_logit_softcapping\":30.0}",
             l);
    open_fails(d, LM_EUNSUPPORTED, "final_logit_softcapping", NULL, "gemma3 softcapping");
    /* a post norm missing */
    wlist *l2 = calloc(1, sizeof *l2);
    *l2 = *l;
    wl_remove(l2, "model.layers.4.post_feedforward_layernorm.weight");
    write_hf(d, sizeof d, "gemma3-nopost",
             "{\"architectures\":[\"Gemma3ForCausalLM\"],\"hidden_size\":32,"
             "\"intermediate_size\":48,\"num_hidden_layers\":7,\"num_attention_heads\":4,\"num_key_value_heads\":1,"
             "\"head_dim\":16,\"vocab_size\":60}",
             l2);
    open_fails(d, LM_ECORRUPT, "model.layers.4.post_feedforward_layernorm.weight", NULL, "gemma3 missing post norm");

    /* multimodal: text_config, both prefixes, vision tensors ignored */
    static const struct {
        const char *prefix, *head, *dir;
    } mm[] = {{"model.language_model.", "lm_head.weight", "gemma3-mm"},
              {"language_model.model.", "language_model.lm_head.weight", "gemma3-mm-old"}};
    for (int k = 0; k < 2; k++) {
        tiny tm = t;
        tm.prefix = mm[k].prefix;
        tm.head = mm[k].head;
        tm.lm_head = 1;
        tiny_hf(l2, &tm);
        wl_add(l2, "vision_tower.vision_model.embeddings.patch_embedding.weight", 8, 12);
        wl_add(l2, "multi_modal_projector.mm_soft_emb_norm.weight", 8, 0);
        write_hf(d, sizeof d, mm[k].dir,
                 "{\"architectures\":[\"Gemma3ForConditionalGeneration\"],\"model_type\":\"gemma3\","
                 "\"text_config\":{\"model_type\":\"gemma3_text\",\"hidden_size\":32,\"intermediate_size\":48,"
                 "\"num_hidden_layers\":7,\"num_attention_heads\":4,\"num_key_value_heads\":1,\"head_dim\":16,"
                 "\"vocab_size\":60,\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":8.0},\"sliding_window\":16},"
                 "\"vision_config\":{\"hidden_size\":8},\"eos_token_id\":[1,106],\"tie_word_embeddings\":true}",
                 l2);
        m = open_ok(d);
        if (m) {
            const lm_config *c = &m->cfg;
            CHECK(c->arch == LM_ARCH_GEMMA3 && c->n_layer == 7 && c->dim == 32 && c->sliding_pattern == 6,
                  "gemma3 mm cfg %s", mm[k].prefix);
            CHECK(c->rope_type == 1 && c->rope_factor == 8.0f && c->rope_theta == 1e6f && c->rope_theta_local == 1e4f,
                  "gemma3 mm rope defaults + linear scaling");
            CHECK(c->eos_id == 1 && c->tie_embeddings && m->output == m->tok_embd, "gemma3 mm eos list, tied");
            CHECK(strstr(m->tok_embd->name, mm[k].prefix) == m->tok_embd->name, "gemma3 mm prefix %s",
                  m->tok_embd->name);
            lm_model_close(m);
        }
    }
    write_hf(d, sizeof d, "gemma3-mm-notext", "{\"architectures\":[\"Gemma3ForConditionalGeneration\"]}", l2);
    open_fails(d, LM_ECORRUPT, "text_config", NULL, "gemma3 mm without text_config");

    /* GGUF: norms stored as 1+w (norm_add_one 0), no permutation, llama.cpp defaults */
    char p[1024];
    tiny_gguf(l, &t);
    gkv kv[] = {{"general.architecture", 's', "gemma3", 0},
                {"gemma3.block_count", 'u', 0, 7},
                {"gemma3.embedding_length", 'u', 0, 32},
                {"gemma3.feed_forward_length", 'u', 0, 48},
                {"gemma3.attention.head_count", 'u', 0, 4},
                {"gemma3.attention.head_count_kv", 'u', 0, 1},
                {"gemma3.attention.key_length", 'u', 0, 16},
                {"gemma3.attention.value_length", 'u', 0, 16},
                {"gemma3.rope.freq_base", 'f', 0, 1e6},
                {"gemma3.attention.layer_norm_rms_epsilon", 'f', 0, 1e-6},
                {"gemma3.attention.sliding_window", 'u', 0, 512},
                {"tokenizer.ggml.model", 's', "llama", 0},
                {"tokenizer.ggml.bos_token_id", 'u', 0, 2},
                {"tokenizer.ggml.add_bos_token", 'b', 0, 1},
                {"tokenizer.ggml.tokens", 'S', 0, 60}};
    scratch(p, sizeof p, "gemma3.gguf");
    write_gguf(p, kv, (int)(sizeof kv / sizeof kv[0]), l);
    m = open_ok(p);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->arch == LM_ARCH_GEMMA3 && c->norm_add_one == 0 && c->has_post_norms && c->has_qk_norm,
              "gemma3 gguf flags");
        CHECK(c->sliding_window == 512 && c->sliding_pattern == 6 && c->rope_theta_local == 1e4f, "gemma3 gguf window");
        CHECK_CLOSE(c->attn_scale, 0.25, 1e-7, 0, "gemma3 gguf attn_scale 1/sqrt(head_dim)");
        CHECK_CLOSE(c->embed_scale, sqrt(32.0), 1e-6, 0, "gemma3 gguf embed_scale");
        CHECK(m->layers[0].w[LM_MOD_Q]->qk_perm_heads == 0 && m->layers[3].post_ffn_norm &&
                  strstr(m->layers[3].post_ffn_norm->name, "post_ffw_norm"),
              "gemma3 gguf tensors");
        CHECK(c->bos_id == 2 && c->add_bos == 1 && c->vocab == 60, "gemma3 gguf tokens");
        lm_model_close(m);
    }
    /* a post-norm tensor in a llama GGUF would be ignored: refused */
    tiny tl = {1, 32, 4, 2, 8, 48, 40, 0, 0, 1, 0, NULL, NULL};
    tiny_gguf(l, &tl);
    gkv kl[] = {{"general.architecture", 's', "llama", 0},
                {"llama.block_count", 'u', 0, 1},
                {"llama.embedding_length", 'u', 0, 32},
                {"llama.feed_forward_length", 'u', 0, 48},
                {"llama.attention.head_count", 'u', 0, 4},
                {"llama.attention.head_count_kv", 'u', 0, 2},
                {"llama.attention.layer_norm_rms_epsilon", 'f', 0, 1e-5},
                {"tokenizer.ggml.tokens", 'S', 0, 40}};
    scratch(p, sizeof p, "llama-postnorm.gguf");
    write_gguf(p, kl, (int)(sizeof kl / sizeof kl[0]), l);
    open_fails(p, LM_EUNSUPPORTED, "blk.0.post_attention_norm.weight", NULL, "llama gguf with a post norm");
    free(l2);
    free(l);
}

/* Mistral sliding window; Llama rope scaling variants. */
static void test_mistral_llama(void) {
    char d[512];
    wlist *l = calloc(1, sizeof *l);
    tiny t = {2, 32, 4, 2, 8, 48, 40, 0, 0, 0, 1, "model.", "lm_head.weight"};
    tiny_hf(l, &t);
    const char *base = "\"hidden_size\":32,\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                       "\"num_key_value_heads\":2,\"vocab_size\":40";
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"architectures\":[\"MistralForCausalLM\"],%s,\"sliding_window\":4096}", base);
    lm_model *m = open_ok(write_hf(d, sizeof d, "mistral", cfg, l));
    if (m) {
        CHECK(m->cfg.arch == LM_ARCH_MISTRAL && m->cfg.sliding_window == 4096 && m->cfg.sliding_pattern == 0,
              "mistral: every layer slides");
        CHECK(m->cfg.bos_id == 1 && m->cfg.eos_id == 2 && !m->cfg.tie_embeddings && m->output != m->tok_embd,
              "mistral defaults");
        lm_model_close(m);
    }
    snprintf(cfg, sizeof cfg, "{\"model_type\":\"mistral\",%s,\"sliding_window\":null}", base);
    m = open_ok(write_hf(d, sizeof d, "mistral-nowin", cfg, l));
    if (m) {
        CHECK(m->cfg.arch == LM_ARCH_MISTRAL && m->cfg.sliding_window == 0, "mistral by model_type, null window");
        lm_model_close(m);
    }
    snprintf(
        cfg, sizeof cfg,
        "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_theta\":500000.0,\"rope_scaling\":"
        "{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192,"
        "\"rope_type\":\"llama3\"},\"eos_token_id\":[128001,128008,128009]}",
        base);
    m = open_ok(write_hf(d, sizeof d, "llama3", cfg, l));
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->rope_type == 2 && c->rope_factor == 32.0f && c->rope_low_freq_factor == 1.0f &&
                  c->rope_high_freq_factor == 4.0f && c->rope_orig_max_pos == 8192 && c->rope_theta == 5e5f,
              "llama3 rope scaling");
        CHECK(c->eos_id == 128001, "first of the eos list");
        lm_model_close(m);
    }
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}",
             base);
    m = open_ok(write_hf(d, sizeof d, "llama-linear", cfg, l));
    if (m) {
        CHECK(m->cfg.rope_type == 1 && m->cfg.rope_factor == 2.0f, "linear rope scaling");
        lm_model_close(m);
    }
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_parameters\":{\"rope_theta\":250000.0,"
             "\"rope_type\":\"default\"}}",
             base);
    m = open_ok(write_hf(d, sizeof d, "llama-rp", cfg, l));
    if (m) {
        CHECK(m->cfg.rope_type == 0 && m->cfg.rope_theta == 2.5e5f && m->cfg.rope_theta_local == 2.5e5f,
              "transformers 5 rope_parameters");
        lm_model_close(m);
    }
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_scaling\":{\"rope_type\":\"yarn\","
             "\"factor\":4.0}}",
             base);
    open_fails(write_hf(d, sizeof d, "llama-yarn", cfg, l), LM_EUNSUPPORTED, "'yarn'", "config.json", "yarn rope");
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"rope_scaling\":{\"rope_type\":\"llama3\","
             "\"factor\":8.0}}",
             base);
    open_fails(write_hf(d, sizeof d, "llama3-incomplete", cfg, l), LM_ECORRUPT, "low_freq_factor", NULL,
               "llama3 scaling without its parameters");
    snprintf(cfg, sizeof cfg, "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"attention_bias\":true}", base);
    open_fails(write_hf(d, sizeof d, "llama-bias", cfg, l), LM_EUNSUPPORTED, "attention_bias", NULL,
               "llama attention_bias");
    snprintf(cfg, sizeof cfg, "{\"architectures\":[\"LlamaForCausalLM\"],%s,\"hidden_act\":\"relu\"}", base);
    open_fails(write_hf(d, sizeof d, "llama-relu", cfg, l), LM_EUNSUPPORTED, "'relu'", NULL, "llama relu");

    /* Llama 3 scaling in GGUF is only the rope_freqs tensor: parameters recovered */
    tiny tg = {1, 256, 2, 1, 128, 48, 40, 0, 0, 0, 0, NULL, NULL};
    tiny_gguf(l, &tg);
    static float rf[64];
    for (int i = 0; i < 64; i++) {
        double freq = 1.0 / pow(500000.0, 2.0 * i / 128), wl = 2 * M_PI / freq, lw = 8192.0, hw = 2048.0;
        double f = wl < hw ? 1.0 : wl > lw ? 32.0 : 1.0 / ((1 - (8192.0 / wl - 1) / 3) / 32.0 + (8192.0 / wl - 1) / 3);
        rf[i] = (float)f;
    }
    wtensor *w = &l->t[l->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "rope_freqs.weight");
    w->ndim = 1;
    w->shape[0] = 64;
    w->data = rf;
    w->nbytes = sizeof rf;
    gkv kv[] = {{"general.architecture", 's', "llama", 0},  {"llama.block_count", 'u', 0, 1},
                {"llama.embedding_length", 'u', 0, 256},    {"llama.feed_forward_length", 'u', 0, 48},
                {"llama.attention.head_count", 'u', 0, 2},  {"llama.attention.head_count_kv", 'u', 0, 1},
                {"llama.rope.freq_base", 'f', 0, 500000.0}, {"llama.attention.layer_norm_rms_epsilon", 'f', 0, 1e-5},
                {"tokenizer.ggml.model", 's', "gpt2", 0}};
    char p[1024];
    scratch(p, sizeof p, "llama3.gguf");
    write_gguf(p, kv, (int)(sizeof kv / sizeof kv[0]), l);
    m = open_ok(p);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->rope_type == 2 && c->rope_factor == 32.0f && c->rope_orig_max_pos == 8192 &&
                  c->rope_low_freq_factor == 1.0f && c->rope_high_freq_factor == 4.0f,
              "llama3 scaling recovered from rope_freqs.weight");
        CHECK(c->vocab == 40 && c->add_bos == 0, "vocab from token_embd rows; gpt2 tokenizer: no BOS");
        CHECK(m->layers[0].w[LM_MOD_Q]->qk_perm_heads == 2 && m->layers[0].w[LM_MOD_K]->qk_perm_heads == 1,
              "llama gguf q/k permuted");
        lm_model_close(m);
    }
    rf[40] *= 1.5f;
    write_gguf(p, kv, (int)(sizeof kv / sizeof kv[0]), l);
    open_fails(p, LM_EUNSUPPORTED, "rope_freqs.weight", NULL, "rope factors that are not llama3's");
    gkv kv2[] = {{"general.architecture", 's', "phi3", 0}};
    write_gguf(p, kv2, 1, l);
    open_fails(p, LM_EUNSUPPORTED, "'phi3'", "qwen3", "unknown GGUF architecture");
    free(l);
}

/* ------------------------------------------------------------------------ */
/* Broken checkpoints                                                        */
/* ------------------------------------------------------------------------ */

static void test_broken(void) {
    char d[512], p[1024];
    wlist *l = calloc(1, sizeof *l);
    tiny t = {2, 32, 4, 2, 8, 48, 40, 0, 0, 0, 0, "model.", "lm_head.weight"};
    tiny_hf(l, &t);
    const char *good = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":48,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":40}";
    lm_model *m = open_ok(write_hf(d, sizeof d, "llama-good", good, l));
    if (m) {
        CHECK(m->cfg.tie_embeddings && m->output == m->tok_embd, "no lm_head: tied");
        CHECK(m->cfg.norm_eps == 1e-6f && m->cfg.max_pos == 2048, "llama class defaults");
        lm_model_close(m);
    }

    write_hf(d, sizeof d, "no-config", NULL, l);
    open_fails(d, LM_EIO, "config.json", NULL, "missing config.json");
    open_fails(write_hf(d, sizeof d, "bad-json", "{\"architectures\":[\"LlamaForCausalLM\"],", l), LM_ECORRUPT,
               "config.json", "invalid JSON", "bad JSON config");
    open_fails(write_hf(d, sizeof d, "gpt2", "{\"architectures\":[\"GPT2LMHeadModel\"],\"model_type\":\"gpt2\"}", l),
               LM_EUNSUPPORTED, "'GPT2LMHeadModel'", "LlamaForCausalLM", "unknown architecture");
    open_fails(write_hf(d, sizeof d, "no-arch", "{\"hidden_size\":32}", l), LM_EUNSUPPORTED, "(none given)",
               "Qwen3ForCausalLM", "no architecture");
    open_fails(write_hf(d, sizeof d, "no-hidden",
                        "{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":48,"
                        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":40}",
                        l),
               LM_ECORRUPT, "'hidden_size'", "missing", "missing hidden_size");
    open_fails(write_hf(d, sizeof d, "str-hidden",
                        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"32\","
                        "\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":40}",
                        l),
               LM_ECORRUPT, "'hidden_size'", "integer", "hidden_size a string");
    open_fails(write_hf(d, sizeof d, "kv3",
                        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,"
                        "\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                        "\"num_key_value_heads\":3,\"vocab_size\":40}",
                        l),
               LM_ECORRUPT, "not a multiple", NULL, "heads not a multiple of kv heads");

    /* a tensor with the wrong shape for the config */
    wlist *l2 = calloc(1, sizeof *l2);
    *l2 = *l;
    wtensor *k = wl_find(l2, "model.layers.1.self_attn.k_proj.weight");
    k->shape[0] = 32;
    write_hf(d, sizeof d, "wrong-shape", good, l2);
    open_fails(d, LM_ESHAPE, "'model.layers.1.self_attn.k_proj.weight': shape [32, 32], expected [16, 32]",
               "n_kv_head=2", "wrong k shape");
    *l2 = *l;
    wl_find(l2, "model.embed_tokens.weight")->shape[0] = 41;
    open_fails(write_hf(d, sizeof d, "wrong-vocab", good, l2), LM_ESHAPE, "expected [40, 32]", "vocab=40",
               "embedding rows");
    *l2 = *l;
    wl_find(l2, "model.norm.weight")->ndim = 2, wl_find(l2, "model.norm.weight")->shape[1] = 1;
    open_fails(write_hf(d, sizeof d, "wrong-ndim", good, l2), LM_ESHAPE, "shape [32, 1], expected [32]", NULL,
               "2-D norm");

    /* a missing required tensor */
    *l2 = *l;
    wl_remove(l2, "model.layers.1.mlp.up_proj.weight");
    open_fails(write_hf(d, sizeof d, "missing-up", good, l2), LM_ECORRUPT, "'model.layers.1.mlp.up_proj.weight'",
               "missing", "missing up_proj");
    *l2 = *l;
    wl_remove(l2, "model.norm.weight");
    open_fails(write_hf(d, sizeof d, "missing-norm", good, l2), LM_ECORRUPT, "'model.norm.weight'", NULL,
               "missing norm");
    *l2 = *l;
    wl_remove(l2, "model.embed_tokens.weight");
    open_fails(write_hf(d, sizeof d, "missing-embd", good, l2), LM_ECORRUPT, "'model.embed_tokens.weight'", NULL,
               "missing embedding");

    /* a bias the architecture does not have */
    *l2 = *l;
    wl_add(l2, "model.layers.0.self_attn.o_proj.bias", 32, 0);
    open_fails(write_hf(d, sizeof d, "extra-bias", good, l2), LM_EUNSUPPORTED, "o_proj.bias", NULL, "unexpected bias");

    /* a weight of a dtype layermap cannot decode */
    *l2 = *l;
    static int64_t ints[48 * 32];
    k = wl_find(l2, "model.layers.0.mlp.gate_proj.weight");
    k->dtype = "I64";
    k->data = ints;
    k->nbytes = sizeof ints;
    open_fails(write_hf(d, sizeof d, "i64-weight", good, l2), LM_EUNSUPPORTED, "gate_proj", "I64", "I64 weight");

    /* a corrupt safetensors file inside a good directory */
    write_hf(d, sizeof d, "corrupt-st", good, l);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    write_bytes(p, "\x08\0\0\0\0\0\0\0{\"a\":1}", 15);
    open_fails(d, LM_ECORRUPT, "model.safetensors", NULL, "corrupt safetensors");

    /* an index naming a missing shard */
    fresh_dir(d, sizeof d, "missing-shard");
    write_text(d, "config.json", good);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    write_st(p, l);
    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00002.safetensors\","
               "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}");
    open_fails(d, LM_EIO, "model-00002-of-00002.safetensors", "index.json", "index names a missing shard");

    /* paths that are not models */
    scratch(p, sizeof p, "nothing-here");
    open_fails(p, LM_EIO, "No such file", NULL, "missing path");
    snprintf(p, sizeof p, "%s/model.safetensors", write_hf(d, sizeof d, "file-not-dir", good, l));
    open_fails(p, LM_EARG, "directory", NULL, "a .safetensors file instead of its directory");
    scratch(p, sizeof p, "not.gguf");
    write_bytes(p, "GGUX0000", 8);
    open_fails(p, LM_ECORRUPT, NULL, NULL, "not a GGUF file");
    lm_err err = {0};
    CHECK(lm_model_open(&m, "", &err) == LM_EARG && m == NULL, "empty path");
    lm_model_close(NULL);
    free(l2);
    free(l);
}

/* ------------------------------------------------------------------------ */
/* Fault injection                                                           */
/* ------------------------------------------------------------------------ */

/* One lm_model_open of the path ctx under fault injection: no model after a
 * failure. */
static int fault_open(void *ctx, lm_err *err, const char **why) {
    lm_model *m = NULL;
    int rc = lm_model_open(&m, ctx, err);
    if (rc != LM_OK && m) *why = "model not NULL after a failure";
    lm_model_close(m);
    return rc;
}

/* Fail the 1st, 2nd, ... allocation of lm_model_open until a run completes
 * without a fault; each run must give LM_ENOMEM (no leak: make asan). */
static void test_faults(void) {
    char paths[5][512];
    model_path(paths[0], 512, "stories260K-hf");
    model_path(paths[1], 512, "stories260K.gguf");
    model_path(paths[2], 512, "stories260K-q8_0.gguf");
    scratch(paths[3], 512, "stories-sharded");
    scratch(paths[4], 512, "gemma3-mm");
    for (int i = 0; i < 5; i++) {
        long runs = fault_sweep(lm_basename(paths[i]), fault_open, paths[i], 100000);
        CHECK(runs > 5, "%s: fault loop ran %ld times", paths[i], runs);
    }
}

/* nftw callback: remove one entry of the scratch tree. */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Remove the scratch directory and everything the test wrote there, unless
 * LM_KEEP_SCRATCH is set (to look at the files after a failure). */
static void remove_scratch(void) {
    const char *keep = getenv("LM_KEEP_SCRATCH");
    if (keep && *keep) {
        fprintf(stderr, "scratch files kept in %s\n", scratch_dir());
        return;
    }
    nftw(scratch_dir(), rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    test_stories();
    test_gguf_equals_hf();
    test_q8_bound();
    test_bf16();
    test_sharded();
    test_qwen2();
    test_qwen3();
    test_gemma3();
    test_mistral_llama();
    test_broken();
    test_faults();
    remove_scratch();
    return TEST_END();
}

/*
 * config.c -- the model description (lm_config) from an HF config.json or
 * from GGUF metadata, plus the JSON helpers the loaders share.
 *
 * Architectures: Llama, Mistral, Qwen2, Qwen3, Gemma 3 (text). Every field
 * layermap computes with is read or given its documented default here, so
 * the engine never needs to know which file format a model came from; the
 * differences that remain are in the tensors (model.c).
 *
 * Defaults follow the transformers config classes (a key that is absent in
 * config.json means the class default) and llama.cpp's loader for GGUF.
 */
#include "model/model.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------ */
/* Architectures                                                             */
/* ------------------------------------------------------------------------ */

/* One supported architecture and the names the two formats give it. */
typedef struct arch_info {
    lm_arch arch;
    const char *name;      /* lm_arch_name */
    const char *hf_class;  /* config.json "architectures"[0] */
    const char *hf_type;   /* config.json "model_type" */
    const char *gguf_arch; /* GGUF general.architecture */
} arch_info;

static const arch_info arch_table[] = {
    {LM_ARCH_LLAMA, "llama", "LlamaForCausalLM", "llama", "llama"},
    {LM_ARCH_MISTRAL, "mistral", "MistralForCausalLM", "mistral", "mistral"},
    {LM_ARCH_QWEN2, "qwen2", "Qwen2ForCausalLM", "qwen2", "qwen2"},
    {LM_ARCH_QWEN3, "qwen3", "Qwen3ForCausalLM", "qwen3", "qwen3"},
    {LM_ARCH_GEMMA3, "gemma3", "Gemma3ForCausalLM", "gemma3_text", "gemma3"},
};
#define N_ARCH (int)(sizeof arch_table / sizeof arch_table[0])

/* The multimodal Gemma 3 checkpoint: its language model is described by the
 * "text_config" object of config.json. */
#define GEMMA3_MM_CLASS "Gemma3ForConditionalGeneration"
#define GEMMA3_MM_TYPE "gemma3"

#define HF_SUPPORTED                                                                                                   \
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM, "                    \
    "Gemma3ForConditionalGeneration"
#define GGUF_SUPPORTED "llama, mistral, qwen2, qwen3, gemma3"

const char *lm_arch_name(lm_arch a) {
    for (int i = 0; i < N_ARCH; i++)
        if (arch_table[i].arch == a) return arch_table[i].name;
    return "unknown";
}

/* Settings implied by the architecture alone (the same for both formats). */
static void arch_defaults(lm_config *c, lm_arch a) {
    c->arch = a;
    c->act = LM_ACT_SILU;
    c->embed_scale = 1.0f;
    c->bos_id = c->eos_id = -1;
    c->add_bos = 1;
    switch (a) {
    case LM_ARCH_QWEN2:
        c->has_qkv_bias = 1;
        c->add_bos = 0;
        break;
    case LM_ARCH_QWEN3:
        c->has_qk_norm = 1;
        c->add_bos = 0;
        break;
    case LM_ARCH_GEMMA3:
        c->has_qk_norm = 1;
        c->has_post_norms = 1;
        c->act = LM_ACT_GELU_TANH;
        break;
    default: break;
    }
}

/* Checks every loader's result must pass; path names the source. Derived
 * fields (embed_scale for gemma) are filled here. */
static int config_finish(lm_config *c, const char *path, lm_err *err) {
    struct {
        const char *what;
        int v;
    } pos[] = {{"number of layers", c->n_layer},  {"hidden size", c->dim},         {"attention heads", c->n_head},
               {"key/value heads", c->n_kv_head}, {"head dimension", c->head_dim}, {"feed-forward size", c->ffn_dim},
               {"vocabulary size", c->vocab}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v < 1) return LM_CORRUPT(err, "%s: %s is %d, expected >= 1", path, pos[i].what, pos[i].v);
    if (c->n_head % c->n_kv_head)
        return LM_CORRUPT(err, "%s: %d attention heads is not a multiple of %d key/value heads", path, c->n_head,
                          c->n_kv_head);
    if (c->head_dim % 2) return LM_CORRUPT(err, "%s: head dimension %d is odd, RoPE needs it even", path, c->head_dim);
    if ((int64_t)c->n_head * c->head_dim > INT_MAX)
        return LM_CORRUPT(err, "%s: %d heads x %d head dimension is too large", path, c->n_head, c->head_dim);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return LM_CORRUPT(err, "%s: RMSNorm epsilon %g, expected > 0", path, (double)c->norm_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta) || !(c->rope_theta_local > 0.0f) ||
        !isfinite(c->rope_theta_local))
        return LM_CORRUPT(err, "%s: RoPE base %g (local %g), expected > 0", path, (double)c->rope_theta,
                          (double)c->rope_theta_local);
    if (c->rope_type && !(c->rope_factor > 0.0f))
        return LM_CORRUPT(err, "%s: RoPE scaling factor %g, expected > 0", path, (double)c->rope_factor);
    if (c->rope_type == 2 && (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_orig_max_pos < 1))
        return LM_CORRUPT(err,
                          "%s: llama3 RoPE scaling needs high_freq_factor (%g) > low_freq_factor (%g) and "
                          "original_max_position_embeddings (%d) >= 1",
                          path, (double)c->rope_high_freq_factor, (double)c->rope_low_freq_factor,
                          c->rope_orig_max_pos);
    if (c->sliding_window < 0 || c->sliding_pattern < 0)
        return LM_CORRUPT(err, "%s: sliding window %d / pattern %d, expected >= 0", path, c->sliding_window,
                          c->sliding_pattern);
    if (!(c->attn_scale > 0.0f) || !isfinite(c->attn_scale))
        return LM_CORRUPT(err, "%s: attention scale %g, expected > 0", path, (double)c->attn_scale);
    if (c->arch == LM_ARCH_GEMMA3) c->embed_scale = sqrtf((float)c->dim);
    return LM_OK;
}

/* Smallest p such that layer i is global exactly when (i+1) % p == 0, given
 * is_global[0..n); n+1 when every layer slides, 0 when none fits. */
static int sliding_pattern_of(const unsigned char *is_global, int n) {
    for (int p = 1; p <= n + 1; p++) {
        int ok = 1;
        for (int i = 0; i < n && ok; i++) ok = is_global[i] == ((i + 1) % p == 0);
        if (ok) return p;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* HF config.json                                                            */
/* ------------------------------------------------------------------------ */

/* Where keys are looked up: the text config c, then (for values that may sit
 * at the top of a multimodal config) top. */
typedef struct hf_src {
    const char *path;
    const cJSON *c;
    const cJSON *top;
    lm_err *err;
} hf_src;

/* A key's value, NULL when absent or JSON null. */
static const cJSON *hf_get(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Integer key in [lo, INT_MAX]: LM_OK with *out set, or the default when the
 * key is absent and has_dflt; an error names the key otherwise. */
static int hf_int(hf_src *h, const cJSON *o, const char *key, int has_dflt, int dflt, int lo, int *out) {
    const cJSON *v = hf_get(o, key);
    if (!v) {
        if (!has_dflt) return LM_CORRUPT(h->err, "%s: key '%s' is missing", h->path, key);
        *out = dflt;
        return LM_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= INT_MAX) || d != floor(d))
        return LM_CORRUPT(h->err, "%s: key '%s' is not an integer >= %d", h->path, key, lo);
    *out = (int)d;
    return LM_OK;
}

/* Number key, or dflt when absent. */
static int hf_num(hf_src *h, const cJSON *o, const char *key, double dflt, double *out) {
    const cJSON *v = hf_get(o, key);
    if (!v) {
        *out = dflt;
        return LM_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return LM_CORRUPT(h->err, "%s: key '%s' is not a number", h->path, key);
    *out = v->valuedouble;
    return LM_OK;
}

/* Boolean key, or dflt when absent. */
static int hf_bool(hf_src *h, const cJSON *o, const char *key, int dflt, int *out) {
    const cJSON *v = hf_get(o, key);
    if (!v) {
        *out = dflt;
        return LM_OK;
    }
    if (!cJSON_IsBool(v)) return LM_CORRUPT(h->err, "%s: key '%s' is not true or false", h->path, key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return LM_OK;
}

/* A token id key (bos/eos): an integer, or a list whose first entry is taken
 * (Llama 3.1 lists several EOS ids); -1 when absent. Looked up in c, then top. */
static int hf_token_id(hf_src *h, const char *key, int dflt, int *out) {
    const cJSON *v = hf_get(h->c, key);
    if (!v) v = hf_get(h->top, key);
    *out = dflt;
    if (!v) return LM_OK;
    if (cJSON_IsArray(v)) {
        if (!v->child) return LM_OK;
        v = v->child;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= 0 && d <= INT_MAX) || d != floor(d))
        return LM_CORRUPT(h->err, "%s: key '%s' is not a token id", h->path, key);
    *out = (int)d;
    return LM_OK;
}

/* Apply one rope-scaling object (transformers "rope_scaling", or a
 * "rope_parameters" dict) to cfg. */
static int hf_rope_scaling(hf_src *h, const cJSON *rs, lm_config *cfg) {
    if (!rs) return LM_OK;
    if (!cJSON_IsObject(rs)) return LM_CORRUPT(h->err, "%s: key 'rope_scaling' is not an object", h->path);
    const cJSON *t = hf_get(rs, "rope_type");
    if (!t) t = hf_get(rs, "type");
    if (t && !cJSON_IsString(t)) return LM_CORRUPT(h->err, "%s: rope scaling type is not a string", h->path);
    const char *type = t ? t->valuestring : "default";
    double prf;
    int rc = hf_num(h, rs, "partial_rotary_factor", 1.0, &prf);
    if (rc) return rc;
    if (prf != 1.0)
        return lm_fail(h->err, LM_EUNSUPPORTED,
                       "%s: partial_rotary_factor %g is not supported (RoPE on the whole head only)", h->path, prf);
    if (!strcmp(type, "default")) return LM_OK;
    double factor, low, high;
    int orig;
    if (!strcmp(type, "linear")) {
        if (!hf_get(rs, "factor")) return LM_CORRUPT(h->err, "%s: linear rope scaling without 'factor'", h->path);
        if ((rc = hf_num(h, rs, "factor", 1.0, &factor))) return rc;
        cfg->rope_type = 1;
        cfg->rope_factor = (float)factor;
        return LM_OK;
    }
    if (!strcmp(type, "llama3")) {
        static const char *const need[] = {"factor", "low_freq_factor", "high_freq_factor"};
        for (int i = 0; i < 3; i++)
            if (!hf_get(rs, need[i]))
                return LM_CORRUPT(h->err, "%s: llama3 rope scaling without '%s'", h->path, need[i]);
        if ((rc = hf_num(h, rs, "factor", 1.0, &factor)) || (rc = hf_num(h, rs, "low_freq_factor", 1.0, &low)) ||
            (rc = hf_num(h, rs, "high_freq_factor", 4.0, &high)) ||
            (rc = hf_int(h, rs, "original_max_position_embeddings", 1, cfg->max_pos, 1, &orig)))
            return rc;
        cfg->rope_type = 2;
        cfg->rope_factor = (float)factor;
        cfg->rope_low_freq_factor = (float)low;
        cfg->rope_high_freq_factor = (float)high;
        cfg->rope_orig_max_pos = orig;
        return LM_OK;
    }
    return lm_fail(h->err, LM_EUNSUPPORTED,
                   "%s: rope scaling type '%s' is not supported (default, linear and llama3 are)", h->path, type);
}

/* rope_theta, rope_theta_local and scaling, in both the classic layout
 * ("rope_theta", "rope_scaling", gemma's "rope_local_base_freq") and the
 * transformers 5 one ("rope_parameters", flat or per layer type). */
static int hf_rope(hf_src *h, lm_config *cfg, double dflt_theta, double dflt_local) {
    const cJSON *c = h->c;
    const cJSON *rp = hf_get(c, "rope_parameters");
    if (rp && !cJSON_IsObject(rp)) return LM_CORRUPT(h->err, "%s: key 'rope_parameters' is not an object", h->path);
    const cJSON *full = rp ? hf_get(rp, "full_attention") : NULL;
    const cJSON *slide = rp ? hf_get(rp, "sliding_attention") : NULL;
    double theta, local;
    int rc;
    if (full || slide) { /* per layer type */
        if ((rc = hf_num(h, full, "rope_theta", dflt_theta, &theta)) ||
            (rc = hf_num(h, slide, "rope_theta", dflt_local, &local)))
            return rc;
        if ((rc = hf_rope_scaling(h, full, cfg))) return rc;
        lm_config tmp = *cfg;
        tmp.rope_type = 0;
        if ((rc = hf_rope_scaling(h, slide, &tmp))) return rc;
        if (tmp.rope_type)
            return lm_fail(h->err, LM_EUNSUPPORTED, "%s: rope scaling on sliding-window layers is not supported",
                           h->path);
    } else {
        if ((rc = hf_num(h, rp, "rope_theta", dflt_theta, &theta)) ||
            (rc = hf_num(h, c, "rope_theta", theta, &theta)) ||
            (rc = hf_num(h, c, "rope_local_base_freq", cfg->arch == LM_ARCH_GEMMA3 ? dflt_local : theta, &local)))
            return rc;
        const cJSON *rs = hf_get(c, "rope_scaling");
        if ((rc = hf_rope_scaling(h, rs ? rs : rp, cfg))) return rc;
    }
    double prf;
    if ((rc = hf_num(h, c, "partial_rotary_factor", 1.0, &prf))) return rc;
    if (prf != 1.0)
        return lm_fail(h->err, LM_EUNSUPPORTED,
                       "%s: partial_rotary_factor %g is not supported (RoPE on the whole head only)", h->path, prf);
    cfg->rope_theta = (float)theta;
    cfg->rope_theta_local = (float)local;
    return LM_OK;
}

/* Gemma 3 sliding-window layout: "layer_types" when present, else the older
 * "sliding_window_pattern" (default 6: five local layers, then one global). */
static int hf_gemma3_sliding(hf_src *h, lm_config *cfg) {
    const cJSON *c = h->c;
    int rc, win, pat;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "sliding_window")))
        win = 0; /* explicit null: none */
    else if ((rc = hf_int(h, c, "sliding_window", 1, 4096, 0, &win)))
        return rc;
    const cJSON *lt = hf_get(c, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != cfg->n_layer)
            return LM_CORRUPT(h->err, "%s: key 'layer_types' is not a list of %d layer types", h->path, cfg->n_layer);
        unsigned char *g = lm_malloc((size_t)cfg->n_layer);
        if (!g) return lm_nomem(h->err, (size_t)cfg->n_layer, "layer types");
        int i = 0, any_slide = 0;
        for (const cJSON *e = lt->child; e; e = e->next, i++) {
            const char *s = cJSON_IsString(e) ? e->valuestring : "";
            if (!strcmp(s, "full_attention"))
                g[i] = 1;
            else if (!strcmp(s, "sliding_attention"))
                g[i] = 0, any_slide = 1;
            else {
                lm_free(g);
                return lm_fail(h->err, LM_EUNSUPPORTED,
                               "%s: layer_types[%d] is '%s' (full_attention or sliding_attention expected)", h->path, i,
                               s);
            }
        }
        pat = any_slide ? sliding_pattern_of(g, cfg->n_layer) : 0;
        lm_free(g);
        if (any_slide && !pat)
            return lm_fail(h->err, LM_EUNSUPPORTED,
                           "%s: layer_types is not periodic (every p-th layer global); layermap cannot express it",
                           h->path);
        if (!any_slide) win = 0;
    } else if ((rc = hf_int(h, c, "sliding_window_pattern", 1, 6, 1, &pat))) {
        return rc;
    }
    cfg->sliding_window = win;
    cfg->sliding_pattern = win ? pat : 0;
    return LM_OK;
}

/* Everything below "architectures": c is the (text) config object. */
static int hf_fields(hf_src *h, lm_config *cfg) {
    const cJSON *c = h->c;
    lm_arch a = cfg->arch;
    int g3 = a == LM_ARCH_GEMMA3, rc;
    /* transformers class defaults for what a config.json may leave out; for
     * the Llama family the size keys are required (their class defaults are
     * Llama-2-7B's, never what an actual small checkpoint means) */
    if ((rc = hf_int(h, c, "num_hidden_layers", g3, 26, 1, &cfg->n_layer)) ||
        (rc = hf_int(h, c, "hidden_size", g3, 2304, 1, &cfg->dim)) ||
        (rc = hf_int(h, c, "intermediate_size", g3, 9216, 1, &cfg->ffn_dim)) ||
        (rc = hf_int(h, c, "num_attention_heads", g3, 8, 1, &cfg->n_head)) ||
        (rc = hf_int(h, c, "num_key_value_heads", 1, g3 ? 4 : cfg->n_head, 1, &cfg->n_kv_head)) ||
        (rc = hf_int(h, c, "vocab_size", g3, 262208, 1, &cfg->vocab)))
        return rc;
    int dflt_hd = g3 ? 256 : a == LM_ARCH_QWEN3 ? 128 : cfg->dim / cfg->n_head;
    if (!g3 && a != LM_ARCH_QWEN3 && cfg->dim % cfg->n_head && !hf_get(c, "head_dim"))
        return LM_CORRUPT(h->err,
                          "%s: hidden_size %d is not a multiple of num_attention_heads %d and no head_dim is given",
                          h->path, cfg->dim, cfg->n_head);
    int max_pos_dflt = g3                                           ? 131072
                       : a == LM_ARCH_MISTRAL                       ? 131072
                       : (a == LM_ARCH_QWEN2 || a == LM_ARCH_QWEN3) ? 32768
                                                                    : 2048;
    if ((rc = hf_int(h, c, "head_dim", 1, dflt_hd, 1, &cfg->head_dim)) ||
        (rc = hf_int(h, c, "max_position_embeddings", 1, max_pos_dflt, 0, &cfg->max_pos)))
        return rc;
    double eps;
    if ((rc = hf_num(h, c, "rms_norm_eps", 1e-6, &eps))) return rc;
    cfg->norm_eps = (float)eps;
    if ((rc = hf_rope(h, cfg, g3 ? 1e6 : 1e4, 1e4))) return rc;

    /* tie: the text config's key, else the top level's, else the class default */
    int tie_dflt = g3;
    if (hf_get(h->top, "tie_word_embeddings") && (rc = hf_bool(h, h->top, "tie_word_embeddings", tie_dflt, &tie_dflt)))
        return rc;
    if ((rc = hf_bool(h, c, "tie_word_embeddings", tie_dflt, &cfg->tie_embeddings))) return rc;
    if ((rc = hf_token_id(h, "bos_token_id",
                          g3                                             ? 2
                          : (a == LM_ARCH_LLAMA || a == LM_ARCH_MISTRAL) ? 1
                                                                         : -1,
                          &cfg->bos_id)) ||
        (rc = hf_token_id(h, "eos_token_id",
                          g3                                             ? 1
                          : (a == LM_ARCH_LLAMA || a == LM_ARCH_MISTRAL) ? 2
                                                                         : -1,
                          &cfg->eos_id)))
        return rc;

    /* activation */
    const char *act_key = g3 ? "hidden_activation" : "hidden_act";
    const cJSON *act = hf_get(c, act_key);
    if (g3 && !act) act = hf_get(c, "hidden_act");
    const char *an = act && cJSON_IsString(act) ? act->valuestring : g3 ? "gelu_pytorch_tanh" : "silu";
    if (act && !cJSON_IsString(act)) return LM_CORRUPT(h->err, "%s: key '%s' is not a string", h->path, act_key);
    if (g3 ? strcmp(an, "gelu_pytorch_tanh") && strcmp(an, "gelu_tanh") : strcmp(an, "silu") && strcmp(an, "swish"))
        return lm_fail(h->err, LM_EUNSUPPORTED, "%s: activation '%s' is not supported for %s (%s is)", h->path, an,
                       lm_arch_name(a), g3 ? "gelu_pytorch_tanh" : "silu");

    /* what would change the computation and layermap does not do */
    int ab, mb;
    if ((rc = hf_bool(h, c, "attention_bias", 0, &ab)) || (rc = hf_bool(h, c, "mlp_bias", 0, &mb))) return rc;
    if ((ab && a != LM_ARCH_QWEN2) || mb)
        return lm_fail(h->err, LM_EUNSUPPORTED, "%s: %s with %s is not supported", h->path, lm_arch_name(a),
                       mb ? "mlp_bias" : "attention_bias");
    if (a == LM_ARCH_QWEN2 || a == LM_ARCH_QWEN3) {
        int sw;
        if ((rc = hf_bool(h, c, "use_sliding_window", 0, &sw))) return rc;
        if (sw)
            return lm_fail(h->err, LM_EUNSUPPORTED,
                           "%s: use_sliding_window (%s's layer-range sliding window) is not supported", h->path,
                           lm_arch_name(a));
    }
    if (a == LM_ARCH_MISTRAL) { /* every layer slides; null or absent-in-config means the class default 4096 */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(c, "sliding_window");
        if (cJSON_IsNull(sw))
            cfg->sliding_window = 0;
        else if ((rc = hf_int(h, c, "sliding_window", 1, 4096, 0, &cfg->sliding_window)))
            return rc;
        cfg->sliding_pattern = 0;
    }
    cfg->attn_scale = 1.0f / sqrtf((float)cfg->head_dim);
    if (g3) {
        double qpas;
        if ((rc = hf_num(h, c, "query_pre_attn_scalar", 256, &qpas))) return rc;
        if (!(qpas > 0)) return LM_CORRUPT(h->err, "%s: query_pre_attn_scalar %g, expected > 0", h->path, qpas);
        cfg->attn_scale = (float)(1.0 / sqrt(qpas));
        static const char *const off[] = {"final_logit_softcapping", "attn_logit_softcapping"};
        for (int i = 0; i < 2; i++)
            if (hf_get(c, off[i])) return lm_fail(h->err, LM_EUNSUPPORTED, "%s: %s is not supported", h->path, off[i]);
        int bidi;
        if ((rc = hf_bool(h, c, "use_bidirectional_attention", 0, &bidi))) return rc;
        if (bidi) return lm_fail(h->err, LM_EUNSUPPORTED, "%s: use_bidirectional_attention is not supported", h->path);
        if ((rc = hf_gemma3_sliding(h, cfg))) return rc;
        cfg->norm_add_one = 1; /* Gemma3RMSNorm: x * (1 + w) */
    }
    return LM_OK;
}

/* add_bos from tokenizer_config.json beside config.json, when it says. */
static int hf_add_bos(const char *dir, lm_config *cfg, lm_err *err) {
    size_t n = strlen(dir) + 32;
    char *p = lm_malloc(n);
    if (!p) return lm_nomem(err, n, "file name");
    snprintf(p, n, "%s/tokenizer_config.json", dir);
    struct stat st;
    int rc = LM_OK;
    if (stat(p, &st) == 0) {
        cJSON *j;
        rc = lm_json_read_file(&j, p, err);
        if (!rc) {
            hf_src h = {p, j, NULL, err};
            if (!cJSON_IsObject(j))
                rc = LM_CORRUPT(err, "%s: not a JSON object", p);
            else
                rc = hf_bool(&h, j, "add_bos_token", cfg->add_bos, &cfg->add_bos);
            cJSON_Delete(j);
        }
    }
    lm_free(p);
    return rc;
}

int lm_config_from_hf(lm_config *cfg, const char *dir, lm_err *err) {
    memset(cfg, 0, sizeof *cfg);
    size_t n = strlen(dir) + 16;
    char *path = lm_malloc(n);
    if (!path) return lm_nomem(err, n, "file name");
    snprintf(path, n, "%s/config.json", dir);
    cJSON *root = NULL;
    int rc = lm_json_read_file(&root, path, err);
    if (rc) goto done;
    hf_src h = {path, root, root, err};
    if (!cJSON_IsObject(root)) {
        rc = LM_CORRUPT(err, "%s: not a JSON object", path);
        goto done;
    }
    /* the architecture: "architectures"[0] when given, else "model_type" */
    const cJSON *archs = hf_get(root, "architectures"), *mt = hf_get(root, "model_type");
    const char *cls = archs && cJSON_IsArray(archs) && cJSON_IsString(archs->child) ? archs->child->valuestring : NULL;
    const char *type = mt && cJSON_IsString(mt) ? mt->valuestring : NULL;
    int found = -1, mm = 0;
    for (int i = 0; i < N_ARCH && found < 0; i++)
        if (cls ? !strcmp(cls, arch_table[i].hf_class) : type && !strcmp(type, arch_table[i].hf_type)) found = i;
    if (found < 0 && (cls ? !strcmp(cls, GEMMA3_MM_CLASS) : type && !strcmp(type, GEMMA3_MM_TYPE))) {
        mm = 1;
        for (found = 0; arch_table[found].arch != LM_ARCH_GEMMA3; found++) {}
    }
    if (found < 0) {
        rc = lm_fail(err, LM_EUNSUPPORTED, "%s: architecture '%s' is not supported (supported: %s)", path,
                     cls    ? cls
                     : type ? type
                            : "(none given)",
                     HF_SUPPORTED);
        goto done;
    }
    arch_defaults(cfg, arch_table[found].arch);
    if (mm) {
        h.c = hf_get(root, "text_config");
        if (!cJSON_IsObject(h.c)) {
            rc = LM_CORRUPT(err, "%s: %s without a 'text_config' object", path, GEMMA3_MM_CLASS);
            goto done;
        }
    }
    if ((rc = hf_fields(&h, cfg))) goto done;
    if ((rc = hf_add_bos(dir, cfg, err))) goto done;
    rc = config_finish(cfg, path, err);
done:
    cJSON_Delete(root);
    lm_free(path);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* GGUF metadata                                                             */
/* ------------------------------------------------------------------------ */

/* Keys are "<arch>.<suffix>"; gg_key formats one into buf. */
static const char *gg_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

/* Integer key in [lo, INT_MAX] (a per-layer array is accepted when every
 * layer has the same value). *out = dflt when absent and has_dflt. */
static int gg_int(const lm_gguf *g, const char *key, int has_dflt, int dflt, int lo, int *out, lm_err *err) {
    const char *path = g->file.path;
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    int64_t v;
    if (kv && kv->type == LM_GGUF_ARRAY) {
        if (kv->n == 0 || kv->arr_type == LM_GGUF_STRING || kv->arr_type == LM_GGUF_ARRAY ||
            kv->arr_type == LM_GGUF_FLOAT32 || kv->arr_type == LM_GGUF_FLOAT64)
            return LM_CORRUPT(err, "%s: key '%s' is not an integer or a list of integers", path, key);
        v = lm_gguf_arr_int(kv, 0);
        for (uint64_t i = 1; i < kv->n; i++)
            if (lm_gguf_arr_int(kv, i) != v)
                return lm_fail(err, LM_EUNSUPPORTED,
                               "%s: key '%s' differs between layers (%lld and %lld); not supported", path, key,
                               (long long)v, (long long)lm_gguf_arr_int(kv, i));
    } else {
        int rc = lm_gguf_get_int(g, key, &v, err);
        if (rc == -1) {
            if (!has_dflt) return LM_CORRUPT(err, "%s: key '%s' is missing", path, key);
            *out = dflt;
            return LM_OK;
        }
        if (rc) return rc;
    }
    if (v < lo || v > INT_MAX)
        return LM_CORRUPT(err, "%s: key '%s' is %lld, expected >= %d", path, key, (long long)v, lo);
    *out = (int)v;
    return LM_OK;
}

/* Number key, dflt when absent (has_dflt) or an error naming it. */
static int gg_num(const lm_gguf *g, const char *key, int has_dflt, double dflt, double *out, lm_err *err) {
    int rc = lm_gguf_get_float(g, key, out, err);
    if (rc == -1) {
        if (!has_dflt) return LM_CORRUPT(err, "%s: key '%s' is missing", g->file.path, key);
        *out = dflt;
        return LM_OK;
    }
    if (rc) return rc;
    if (!isfinite(*out)) return LM_CORRUPT(err, "%s: key '%s' is not finite", g->file.path, key);
    return LM_OK;
}

/* Llama 3 RoPE scaling in GGUF: llama.cpp's converter stores no parameters,
 * only the per-frequency divisors in 'rope_freqs.weight'. Recover the
 * parameters by matching the divisors against the Llama 3.x family's
 * (low_freq_factor 1, high_freq_factor 4, original context 8192; factor = the
 * largest divisor) with the converter's own formula. */
static int gg_rope_freqs(const lm_gguf *g, lm_config *cfg, lm_err *err) {
    const char *path = g->file.path;
    const lm_tensor *t = lm_gguf_find_tensor(g, "rope_freqs.weight");
    if (!t) return LM_OK;
    int n = cfg->head_dim / 2;
    if (cfg->arch != LM_ARCH_LLAMA && cfg->arch != LM_ARCH_MISTRAL)
        return lm_fail(err, LM_EUNSUPPORTED,
                       "%s: tensor 'rope_freqs.weight' (RoPE frequency factors) is not supported for %s", path,
                       lm_arch_name(cfg->arch));
    if (t->dtype != LM_DT_F32 || t->ndim != 1 || t->shape[0] != n || t->nbytes != (size_t)n * 4)
        return LM_CORRUPT(err, "%s: tensor 'rope_freqs.weight': expected %d F32 values (head_dim/2)", path, n);
    float *rf = lm_malloc((size_t)n * sizeof *rf);
    if (!rf) return lm_nomem(err, (size_t)n * sizeof *rf, "rope factors");
    memcpy(rf, t->data, (size_t)n * sizeof *rf);
    double factor = 1.0, low = 1.0, high = 4.0, orig = 8192.0;
    for (int i = 0; i < n; i++)
        if (rf[i] > factor) factor = rf[i];
    int ok = 1;
    double lw = orig / low, hw = orig / high;
    for (int i = 0; i < n && ok; i++) {
        double freq = 1.0 / pow((double)cfg->rope_theta, 2.0 * i / cfg->head_dim);
        double wl = 2.0 * M_PI / freq, want;
        if (wl < hw)
            want = 1.0;
        else if (wl > lw)
            want = factor;
        else {
            double smooth = (orig / wl - low) / (high - low);
            want = 1.0 / ((1.0 - smooth) / factor + smooth);
        }
        ok = fabs(rf[i] - want) <= 1e-4 * want;
    }
    lm_free(rf);
    if (factor == 1.0) return LM_OK; /* all ones: no scaling */
    if (!ok)
        return lm_fail(err, LM_EUNSUPPORTED,
                       "%s: tensor 'rope_freqs.weight' holds RoPE factors that are not Llama 3 scaling with "
                       "low_freq_factor 1, high_freq_factor 4, original context 8192; not supported",
                       path);
    cfg->rope_type = 2;
    cfg->rope_factor = (float)factor;
    cfg->rope_low_freq_factor = (float)low;
    cfg->rope_high_freq_factor = (float)high;
    cfg->rope_orig_max_pos = (int)orig;
    return LM_OK;
}

/* RoPE scaling keys: "<arch>.rope.scaling.type" (+ ".factor"), or the older
 * "<arch>.rope.scale_linear". */
static int gg_rope_scaling(const lm_gguf *g, const char *arch, lm_config *cfg, lm_err *err) {
    char k[128];
    lm_gguf_str s;
    char type[32] = "";
    int rc = lm_gguf_get_str(g, gg_key(k, sizeof k, arch, "rope.scaling.type"), &s, err);
    if (rc > 0) return rc;
    if (rc == 0) lm_gguf_str_copy(s, type, sizeof type);
    double f;
    if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "rope.scaling.factor"), 1, 0.0, &f, err))) return rc;
    if (!type[0] || !strcmp(type, "none")) {
        double lin;
        if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "rope.scale_linear"), 1, 1.0, &lin, err))) return rc;
        if (lin != 1.0) {
            cfg->rope_type = 1;
            cfg->rope_factor = (float)lin;
        }
        return gg_rope_freqs(g, cfg, err);
    }
    if (!strcmp(type, "linear")) {
        if (f == 0.0) return LM_CORRUPT(err, "%s: linear RoPE scaling without key '%s'", g->file.path, k);
        cfg->rope_type = 1;
        cfg->rope_factor = (float)f;
        return gg_rope_freqs(g, cfg, err);
    }
    return lm_fail(err, LM_EUNSUPPORTED, "%s: RoPE scaling type '%s' is not supported (none and linear are)",
                   g->file.path, type);
}

/* Gemma 3 in GGUF: sliding window, its pattern, the local RoPE base and the
 * attention scale. llama.cpp hard-codes what its converter does not store:
 * pattern 6, local base 10000, and the softmax scale 1/sqrt(head_dim) except
 * for the 62-layer 27B, whose query_pre_attn_scalar is dim/n_head. */
static int gg_gemma3(const lm_gguf *g, const char *arch, lm_config *cfg, lm_err *err) {
    char k[128];
    int rc;
    double d;
    if ((rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.sliding_window"), 1, 0, 0, &cfg->sliding_window, err)))
        return rc;
    const lm_gguf_kv *kv = lm_gguf_find(g, gg_key(k, sizeof k, arch, "attention.sliding_window_pattern"));
    cfg->sliding_pattern = 6;
    if (kv && kv->type == LM_GGUF_ARRAY) { /* per-layer: true = sliding */
        if (kv->arr_type != LM_GGUF_BOOL || kv->n != (uint64_t)cfg->n_layer)
            return LM_CORRUPT(err, "%s: key '%s' is not a list of %d booleans", g->file.path, k, cfg->n_layer);
        unsigned char *glob = lm_malloc((size_t)cfg->n_layer);
        if (!glob) return lm_nomem(err, (size_t)cfg->n_layer, "layer pattern");
        int any = 0;
        for (int i = 0; i < cfg->n_layer; i++) {
            glob[i] = lm_gguf_arr_int(kv, (uint64_t)i) == 0;
            any |= !glob[i];
        }
        cfg->sliding_pattern = any ? sliding_pattern_of(glob, cfg->n_layer) : 0;
        lm_free(glob);
        if (any && !cfg->sliding_pattern)
            return lm_fail(err, LM_EUNSUPPORTED, "%s: key '%s' is not periodic; layermap cannot express it",
                           g->file.path, k);
        if (!any) cfg->sliding_window = 0;
    } else if (kv && (rc = gg_int(g, k, 0, 0, 1, &cfg->sliding_pattern, err))) {
        return rc;
    }
    if (!cfg->sliding_window) cfg->sliding_pattern = 0;
    if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "rope.freq_base_swa"), 1, 10000.0, &d, err))) return rc;
    cfg->rope_theta_local = (float)d;
    double dflt = cfg->n_layer == 62 ? 1.0 / sqrt((double)cfg->dim / cfg->n_head) : 1.0 / sqrt((double)cfg->head_dim);
    if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "attention.scale"), 1, dflt, &d, err))) return rc;
    cfg->attn_scale = (float)d;
    cfg->norm_add_one = 0; /* the converter stored 1 + w */
    return LM_OK;
}

int lm_config_from_gguf(lm_config *cfg, const lm_gguf *g, lm_err *err) {
    memset(cfg, 0, sizeof *cfg);
    const char *path = g->file.path;
    lm_gguf_str s;
    char arch[64], k[128];
    int rc = lm_gguf_get_str(g, "general.architecture", &s, err);
    if (rc == -1) return LM_CORRUPT(err, "%s: key 'general.architecture' is missing", path);
    if (rc) return rc;
    lm_gguf_str_copy(s, arch, sizeof arch);
    int found = -1;
    for (int i = 0; i < N_ARCH && found < 0; i++)
        if (s.len == strlen(arch_table[i].gguf_arch) && !strcmp(arch, arch_table[i].gguf_arch)) found = i;
    if (found < 0)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: architecture '%s' is not supported (supported: %s)", path, arch,
                       GGUF_SUPPORTED);
    arch_defaults(cfg, arch_table[found].arch);

    if ((rc = gg_int(g, gg_key(k, sizeof k, arch, "block_count"), 0, 0, 1, &cfg->n_layer, err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "embedding_length"), 0, 0, 1, &cfg->dim, err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.head_count"), 0, 0, 1, &cfg->n_head, err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.head_count_kv"), 1, cfg->n_head, 1, &cfg->n_kv_head,
                     err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "feed_forward_length"), 0, 0, 1, &cfg->ffn_dim, err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "context_length"), 1, 0, 0, &cfg->max_pos, err)))
        return rc;
    if (cfg->dim % cfg->n_head && !lm_gguf_find(g, gg_key(k, sizeof k, arch, "attention.key_length")))
        return LM_CORRUPT(err, "%s: embedding_length %d is not a multiple of head_count %d and no key_length is given",
                          path, cfg->dim, cfg->n_head);
    int vlen, rot;
    if ((rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.key_length"), 1, cfg->dim / cfg->n_head, 1, &cfg->head_dim,
                     err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.value_length"), 1, cfg->head_dim, 1, &vlen, err)) ||
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "rope.dimension_count"), 1, cfg->head_dim, 1, &rot, err)))
        return rc;
    if (vlen != cfg->head_dim)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: value_length %d differs from key_length %d; not supported", path,
                       vlen, cfg->head_dim);
    if (rot != cfg->head_dim)
        return lm_fail(err, LM_EUNSUPPORTED, "%s: key '%s' is %d, RoPE on part of a %d-dim head is not supported", path,
                       k, rot, cfg->head_dim);
    double d;
    if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "attention.layer_norm_rms_epsilon"), 0, 0, &d, err))) return rc;
    cfg->norm_eps = (float)d;
    if ((rc = gg_num(g, gg_key(k, sizeof k, arch, "rope.freq_base"), 1, 10000.0, &d, err))) return rc;
    cfg->rope_theta = cfg->rope_theta_local = (float)d;
    cfg->attn_scale = 1.0f / sqrtf((float)cfg->head_dim);
    if ((rc = gg_rope_scaling(g, arch, cfg, err))) return rc;
    if (cfg->arch == LM_ARCH_MISTRAL &&
        (rc = gg_int(g, gg_key(k, sizeof k, arch, "attention.sliding_window"), 1, 0, 0, &cfg->sliding_window, err)))
        return rc;
    if (cfg->arch == LM_ARCH_GEMMA3 && (rc = gg_gemma3(g, arch, cfg, err))) return rc;

    /* vocabulary: an explicit size, else the token list, else the embedding rows */
    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens");
    const lm_tensor *emb = lm_gguf_find_tensor(g, "token_embd.weight");
    int dv = tok && tok->type == LM_GGUF_ARRAY && tok->n <= INT_MAX ? (int)tok->n
             : emb && emb->ndim == 2 && emb->shape[0] <= INT_MAX    ? (int)emb->shape[0]
                                                                    : 0;
    if ((rc = gg_int(g, gg_key(k, sizeof k, arch, "vocab_size"), 1, dv, 0, &cfg->vocab, err))) return rc;

    /* tokenizer facts the model carries */
    int64_t v;
    if ((rc = lm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, err)) > 0) return rc;
    cfg->bos_id = rc == 0 && v >= 0 && v <= INT_MAX ? (int)v : -1;
    if ((rc = lm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, err)) > 0) return rc;
    cfg->eos_id = rc == 0 && v >= 0 && v <= INT_MAX ? (int)v : -1;
    char tmodel[32] = "";
    if ((rc = lm_gguf_get_str(g, "tokenizer.ggml.model", &s, err)) > 0) return rc;
    if (rc == 0) lm_gguf_str_copy(s, tmodel, sizeof tmodel);
    cfg->add_bos = strcmp(tmodel, "gpt2") != 0; /* llama.cpp: SPM adds BOS, BPE does not, unless the key says */
    if ((rc = lm_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v, err)) > 0) return rc;
    if (rc == 0) cfg->add_bos = v != 0;
    return config_finish(cfg, path, err);
}

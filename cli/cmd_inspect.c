/*
 * cmd_inspect.c -- `layermap inspect MODEL [--tensors] [--json]`: what
 * layermap sees in a checkpoint. The description (every lm_config field),
 * the format and files, a layers x modules table of parameter counts and
 * dtypes, totals, and with --tensors every tensor (name, dtype, shape,
 * bytes). --json prints the same as one JSON object.
 */
#include "cli.h"
#include "base/fmt.h"

#include <cJSON.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Print the command's help to f. */
static void usage(FILE *f) {
    fprintf(f, "usage: layermap inspect MODEL [--tensors] [--json]\n\n"
               "Show what layermap reads from a model: an HF directory (config.json + model.safetensors,\n"
               "or shards with model.safetensors.index.json) or a .gguf file; or a hub id ORG/NAME found\n"
               "in the local Hugging Face cache (--revision R: a branch, tag or commit; never downloads).\n\n"
               "  --tensors   also list every tensor of the checkpoint: name, dtype, shape, bytes\n"
               "  --json      print one JSON object instead of text\n"
               "  -h, --help  this help\n\n"
               "Printed: architecture and every field of the model description (sizes, RoPE, norms,\n"
               "attention window, special tokens), the file(s), per layer x module the parameter count\n"
               "and dtype of the seven linear modules, and totals (embedding, per layer, all).\n");
}

/* ------------------------------------------------------------------------ */
/* Facts derived from the model                                              */
/* ------------------------------------------------------------------------ */

/* Elements of a tensor (0 for NULL). */
static int64_t nelem(const lm_tensor *t) {
    if (!t) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* The dtype's name, or the file's own for a type layermap cannot decode. */
static const char *dtype_of(const lm_tensor *t) {
    if ((unsigned)t->dtype < (unsigned)LM_DT_COUNT) return lm_dtype_name(t->dtype);
    return t->file_type[0] ? t->file_type : "?";
}

/* 1234567 -> "1,234,567" */
static const char *commas(char *buf, size_t n, int64_t v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%" PRId64, v);
    size_t len = strlen(raw), k = 0, lead = raw[0] == '-';
    for (size_t i = 0; i < len && k + 1 < n; i++) {
        if (i > lead && (len - i) % 3 == 0 && k + 2 < n) buf[k++] = ',';
        buf[k++] = raw[i];
    }
    buf[k] = 0;
    return buf;
}

/* Totals over the bound tensors. */
typedef struct totals {
    int64_t embedding;  /* token embedding */
    int64_t head;       /* output head, 0 when tied */
    int64_t final_norm; /* final norm */
    int64_t modules;    /* the seven linear modules, all layers */
    int64_t layer_rest; /* norms and biases, all layers */
    int64_t all;        /* everything the model uses */
    int64_t file;       /* every tensor in the file(s), used or not */
    int64_t file_bytes; /* their bytes */
} totals;

/* The parameters of layer l (modules, norms, biases). */
static int64_t layer_params(const lm_model *m, int l, int64_t *modules) {
    const lm_layer_weights *L = &m->layers[l];
    int64_t mod = 0, rest = nelem(L->attn_norm) + nelem(L->ffn_norm) + nelem(L->post_attn_norm) +
                            nelem(L->post_ffn_norm) + nelem(L->q_norm) + nelem(L->k_norm);
    for (int k = 0; k < LM_N_MODULES; k++) {
        mod += lm_model_module_params(m, l, k);
        rest += nelem(L->bias[k]);
    }
    if (modules) *modules = mod;
    return mod + rest;
}

static totals count(const lm_model *m) {
    totals t = {0};
    t.embedding = nelem(m->tok_embd);
    t.head = m->output != m->tok_embd ? nelem(m->output) : 0;
    t.final_norm = nelem(m->out_norm);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        int64_t mod, all = layer_params(m, l, &mod);
        t.modules += mod;
        t.layer_rest += all - mod;
    }
    t.all = t.embedding + t.head + t.final_norm + t.modules + t.layer_rest;
    for (int i = 0; i < m->n_tensors; i++) {
        t.file += nelem(&m->tensors[i]);
        t.file_bytes += (int64_t)m->tensors[i].nbytes;
    }
    return t;
}

/* The distinct files the tensors live in (pointers into the model), at most
 * max; returns how many there are in all. */
static int files_of(const lm_model *m, const char **out, int max) {
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const char *p = m->tensors[i].path;
        int j = 0;
        while (j < n && j < max && strcmp(out[j], p)) j++;
        if (j == n) {
            if (n < max) out[n] = p;
            n++;
        }
    }
    return n;
}

/* Size of a file in bytes, -1 if unknown. */
static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* "none", "linear (factor 2)", "llama3 (factor 8, low 1, high 4, original 8192)" */
static const char *rope_scaling_str(char *buf, size_t n, const lm_config *c) {
    if (c->rope_type == 1)
        snprintf(buf, n, "linear (factor %g)", (double)c->rope_factor);
    else if (c->rope_type == 2)
        snprintf(buf, n, "llama3 (factor %g, low_freq_factor %g, high_freq_factor %g, original context %d)",
                 (double)c->rope_factor, (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor,
                 c->rope_orig_max_pos);
    else
        snprintf(buf, n, "none");
    return buf;
}

/* "none", "4096 tokens, every layer", "512 tokens, global attention every 6th layer" */
static const char *window_str(char *buf, size_t n, const lm_config *c) {
    if (!c->sliding_window)
        snprintf(buf, n, "none");
    else if (c->sliding_pattern <= 0)
        snprintf(buf, n, "%d tokens, every layer", c->sliding_window);
    else if (c->sliding_pattern > c->n_layer)
        snprintf(buf, n, "%d tokens, every layer (pattern %d)", c->sliding_window, c->sliding_pattern);
    else
        snprintf(buf, n, "%d tokens; layers %d, %d, ... global (pattern %d)", c->sliding_window, c->sliding_pattern - 1,
                 2 * c->sliding_pattern - 1, c->sliding_pattern);
    return buf;
}

/* Compare names with digit runs as numbers ("blk.2" < "blk.10"). */
static int natural_cmp(const void *pa, const void *pb) {
    const char *a = (*(const lm_tensor *const *)pa)->name, *b = (*(const lm_tensor *const *)pb)->name;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

/* The model's tensors in natural name order (malloc'd; NULL on failure). */
static const lm_tensor **sorted_tensors(const lm_model *m) {
    const lm_tensor **v = malloc((size_t)(m->n_tensors ? m->n_tensors : 1) * sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < m->n_tensors; i++) v[i] = &m->tensors[i];
    qsort(v, (size_t)m->n_tensors, sizeof *v, natural_cmp);
    return v;
}

/* A note on how layermap treats a tensor ("" when nothing special). */
static const char *tensor_note(char *buf, size_t n, const lm_model *m, const lm_tensor *t) {
    buf[0] = 0;
    if (t->qk_perm_heads)
        snprintf(buf, n, "rows un-permuted on read (%d heads)", t->qk_perm_heads);
    else if ((unsigned)t->dtype >= (unsigned)LM_DT_COUNT)
        snprintf(buf, n, "type not readable");
    int used = t == m->tok_embd || t == m->out_norm || t == m->output;
    for (int l = 0; l < m->cfg.n_layer && !used; l++) {
        const lm_layer_weights *L = &m->layers[l];
        used = t == L->attn_norm || t == L->ffn_norm || t == L->post_attn_norm || t == L->post_ffn_norm ||
               t == L->q_norm || t == L->k_norm;
        for (int k = 0; k < LM_N_MODULES && !used; k++) used = t == L->w[k] || t == L->bias[k];
    }
    if (!used && !buf[0]) snprintf(buf, n, "not used");
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                      */
/* ------------------------------------------------------------------------ */

static void print_text(const lm_model *m, int tensors) {
    const lm_config *c = &m->cfg;
    char b1[256], b2[64], b3[64];
    const char *files[64];
    int nf = files_of(m, files, 64);
    totals t = count(m);

    printf("model          %s\n", m->name);
    printf("path           %s\n", m->path);
    printf("format         %s, %d file%s, %s tensors, %s bytes of tensor data\n", m->format, nf, nf == 1 ? "" : "s",
           commas(b2, sizeof b2, m->n_tensors), commas(b3, sizeof b3, t.file_bytes));
    for (int i = 0; i < nf && i < 64; i++) {
        int64_t sz = file_size(files[i]);
        printf("  %s (%s bytes)\n", files[i], sz >= 0 ? commas(b2, sizeof b2, sz) : "?");
    }
    if (nf > 64) printf("  ... and %d more\n", nf - 64);
    printf("architecture   %s\n\n", lm_arch_name(c->arch));

    printf("config\n");
    printf("  n_layer            %d\n", c->n_layer);
    printf("  dim                %d\n", c->dim);
    printf("  n_head             %d\n", c->n_head);
    printf("  n_kv_head          %d\n", c->n_kv_head);
    printf("  head_dim           %d\n", c->head_dim);
    printf("  ffn_dim            %d\n", c->ffn_dim);
    printf("  vocab              %d\n", c->vocab);
    printf("  max_pos            %d\n", c->max_pos);
    printf("  rope_theta         %g\n", (double)c->rope_theta);
    printf("  rope_theta_local   %g\n", (double)c->rope_theta_local);
    printf("  rope_scaling       %s\n", rope_scaling_str(b1, sizeof b1, c));
    printf("  norm_eps           %g\n", (double)c->norm_eps);
    printf("  norm_add_one       %s\n", c->norm_add_one ? "yes (weights applied as 1 + w)" : "no");
    printf("  tie_embeddings     %s\n", c->tie_embeddings ? "yes" : "no");
    printf("  qkv_bias           %s\n", c->has_qkv_bias ? "yes" : "no");
    printf("  qk_norm            %s\n", c->has_qk_norm ? "yes" : "no");
    printf("  post_norms         %s\n", c->has_post_norms ? "yes" : "no");
    printf("  embed_scale        %g\n", (double)c->embed_scale);
    printf("  activation         %s\n", c->act == LM_ACT_GELU_TANH ? "gelu-tanh" : "silu");
    printf("  attn_scale         %g (1/sqrt(%g))\n", (double)c->attn_scale,
           1.0 / ((double)c->attn_scale * c->attn_scale));
    printf("  sliding_window     %s\n", window_str(b1, sizeof b1, c));
    printf("  bos_id / eos_id    %d / %d\n", c->bos_id, c->eos_id);
    printf("  add_bos            %s\n\n", c->add_bos ? "yes" : "no");

    /* layers x modules: parameter count and dtype per cell */
    int w = 5;
    for (int l = 0; l < c->n_layer; l++)
        for (int k = 0; k < LM_N_MODULES; k++) {
            const lm_tensor *x = m->layers[l].w[k];
            int cw = snprintf(b1, sizeof b1, "%s %s", commas(b2, sizeof b2, nelem(x)), dtype_of(x));
            if (cw > w) w = cw;
        }
    int tw = 5;
    for (int l = 0; l < c->n_layer; l++) {
        int cw = (int)strlen(commas(b2, sizeof b2, layer_params(m, l, NULL)));
        if (cw > tw) tw = cw;
    }
    printf("parameters per layer and module (count dtype)\n%5s", "layer");
    for (int k = 0; k < LM_N_MODULES; k++) printf("  %*s", w, lm_module_names[k]);
    printf("  %*s\n", tw, "layer");
    for (int l = 0; l < c->n_layer; l++) {
        printf("%5d", l);
        for (int k = 0; k < LM_N_MODULES; k++) {
            const lm_tensor *x = m->layers[l].w[k];
            snprintf(b1, sizeof b1, "%s %s", commas(b2, sizeof b2, nelem(x)), dtype_of(x));
            printf("  %*s", w, b1);
        }
        printf("  %*s\n", tw, commas(b2, sizeof b2, layer_params(m, l, NULL)));
    }
    printf("  (the layer column adds norms and biases to the seven modules)\n\n");

    printf("totals\n");
    printf("  embedding          %15s  %s %s\n", commas(b2, sizeof b2, t.embedding), m->tok_embd->name,
           dtype_of(m->tok_embd));
    if (t.head)
        printf("  output head        %15s  %s %s\n", commas(b2, sizeof b2, t.head), m->output->name,
               dtype_of(m->output));
    else
        printf("  output head        %15s  tied to the embedding\n", "0");
    printf("  final norm         %15s\n", commas(b2, sizeof b2, t.final_norm));
    printf("  per layer          %15s  (%s in the seven modules)\n",
           commas(b2, sizeof b2, c->n_layer ? (t.modules + t.layer_rest) / c->n_layer : 0),
           commas(b3, sizeof b3, c->n_layer ? t.modules / c->n_layer : 0));
    printf("  all layers         %15s  (%s in modules, %s in norms and biases)\n",
           commas(b2, sizeof b2, t.modules + t.layer_rest), commas(b3, sizeof b3, t.modules),
           commas(b1, sizeof b1, t.layer_rest));
    printf("  all                %15s\n", commas(b2, sizeof b2, t.all));
    if (t.file != t.all)
        printf("  in the file(s)     %15s  (tensors layermap does not use included)\n", commas(b2, sizeof b2, t.file));

    if (!tensors) return;
    const lm_tensor **v = sorted_tensors(m);
    if (!v) {
        cli_errorf("inspect: out of memory");
        return;
    }
    int nw = 4;
    for (int i = 0; i < m->n_tensors; i++)
        if ((int)strlen(v[i]->name) > nw) nw = (int)strlen(v[i]->name);
    printf("\ntensors (%d)\n  %-*s  %-7s  %-20s  %15s\n", m->n_tensors, nw, "name", "dtype", "shape", "bytes");
    for (int i = 0; i < m->n_tensors; i++) {
        const lm_tensor *x = v[i];
        char sh[96], note[96];
        tensor_note(note, sizeof note, m, x);
        printf("  %-*s  %-7s  %-20s  %15s%s%s\n", nw, x->name, dtype_of(x),
               lm_fmt_shape(sh, sizeof sh, x->shape, x->ndim), commas(b2, sizeof b2, (int64_t)x->nbytes),
               note[0] ? "  " : "", note);
    }
    free(v);
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* A float as the shortest decimal that reads back as the same float, so that
 * 1e-5f prints as 1e-05 and not 9.99999974737875e-06. */
static double fnum(float v) {
    char buf[32];
    for (int prec = 6; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) return strtod(buf, NULL);
    }
    return (double)v;
}

/* A JSON array of the tensor's dimensions. */
static cJSON *json_shape(const lm_tensor *t) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)t->shape[i]));
    return a;
}

/* {"name", "dtype", "shape", "params"} of a bound tensor, or null. */
static cJSON *json_tensor_ref(const lm_tensor *t) {
    if (!t) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "dtype", dtype_of(t));
    cJSON_AddItemToObject(o, "shape", json_shape(t));
    cJSON_AddNumberToObject(o, "params", (double)nelem(t));
    return o;
}

/* The whole report as one JSON object (NULL if cJSON runs out of memory). */
static cJSON *build_json(const lm_model *m, int tensors) {
    const lm_config *c = &m->cfg;
    char buf[256];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", m->name);
    cJSON_AddStringToObject(o, "path", m->path);
    cJSON_AddStringToObject(o, "format", m->format);
    cJSON_AddStringToObject(o, "architecture", lm_arch_name(c->arch));
    const char *files[4096];
    int nf = files_of(m, files, 4096);
    cJSON *fa = cJSON_AddArrayToObject(o, "files");
    for (int i = 0; i < nf && i < 4096; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "path", files[i]);
        cJSON_AddNumberToObject(f, "bytes", (double)file_size(files[i]));
        cJSON_AddItemToArray(fa, f);
    }

    cJSON *j = cJSON_AddObjectToObject(o, "config");
    cJSON_AddNumberToObject(j, "n_layer", c->n_layer);
    cJSON_AddNumberToObject(j, "dim", c->dim);
    cJSON_AddNumberToObject(j, "n_head", c->n_head);
    cJSON_AddNumberToObject(j, "n_kv_head", c->n_kv_head);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "ffn_dim", c->ffn_dim);
    cJSON_AddNumberToObject(j, "vocab", c->vocab);
    cJSON_AddNumberToObject(j, "max_pos", c->max_pos);
    cJSON_AddNumberToObject(j, "rope_theta", fnum(c->rope_theta));
    cJSON_AddNumberToObject(j, "rope_theta_local", fnum(c->rope_theta_local));
    cJSON_AddStringToObject(j, "rope_scaling", c->rope_type == 1 ? "linear" : c->rope_type == 2 ? "llama3" : "none");
    cJSON_AddNumberToObject(j, "rope_type", c->rope_type);
    cJSON_AddNumberToObject(j, "rope_factor", fnum(c->rope_factor));
    cJSON_AddNumberToObject(j, "rope_low_freq_factor", fnum(c->rope_low_freq_factor));
    cJSON_AddNumberToObject(j, "rope_high_freq_factor", fnum(c->rope_high_freq_factor));
    cJSON_AddNumberToObject(j, "rope_orig_max_pos", c->rope_orig_max_pos);
    cJSON_AddNumberToObject(j, "norm_eps", fnum(c->norm_eps));
    cJSON_AddBoolToObject(j, "tie_embeddings", c->tie_embeddings);
    cJSON_AddBoolToObject(j, "has_qkv_bias", c->has_qkv_bias);
    cJSON_AddBoolToObject(j, "has_qk_norm", c->has_qk_norm);
    cJSON_AddBoolToObject(j, "has_post_norms", c->has_post_norms);
    cJSON_AddBoolToObject(j, "norm_add_one", c->norm_add_one);
    cJSON_AddNumberToObject(j, "embed_scale", fnum(c->embed_scale));
    cJSON_AddStringToObject(j, "act", c->act == LM_ACT_GELU_TANH ? "gelu-tanh" : "silu");
    cJSON_AddNumberToObject(j, "attn_scale", fnum(c->attn_scale));
    cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
    cJSON_AddNumberToObject(j, "sliding_pattern", c->sliding_pattern);
    cJSON_AddNumberToObject(j, "bos_id", c->bos_id);
    cJSON_AddNumberToObject(j, "eos_id", c->eos_id);
    cJSON_AddBoolToObject(j, "add_bos", c->add_bos);

    cJSON *la = cJSON_AddArrayToObject(o, "layers");
    for (int l = 0; l < c->n_layer; l++) {
        const lm_layer_weights *L = &m->layers[l];
        cJSON *lo = cJSON_CreateObject();
        cJSON_AddNumberToObject(lo, "layer", l);
        cJSON *mo = cJSON_AddObjectToObject(lo, "modules");
        for (int k = 0; k < LM_N_MODULES; k++) {
            cJSON *x = json_tensor_ref(L->w[k]);
            if (L->bias[k]) cJSON_AddItemToObject(x, "bias", json_tensor_ref(L->bias[k]));
            cJSON_AddItemToObject(mo, lm_module_names[k], x);
        }
        cJSON *no = cJSON_AddObjectToObject(lo, "norms");
        cJSON_AddItemToObject(no, "attn_norm", json_tensor_ref(L->attn_norm));
        cJSON_AddItemToObject(no, "ffn_norm", json_tensor_ref(L->ffn_norm));
        cJSON_AddItemToObject(no, "q_norm", json_tensor_ref(L->q_norm));
        cJSON_AddItemToObject(no, "k_norm", json_tensor_ref(L->k_norm));
        cJSON_AddItemToObject(no, "post_attn_norm", json_tensor_ref(L->post_attn_norm));
        cJSON_AddItemToObject(no, "post_ffn_norm", json_tensor_ref(L->post_ffn_norm));
        int64_t mods, all = layer_params(m, l, &mods);
        cJSON_AddNumberToObject(lo, "module_params", (double)mods);
        cJSON_AddNumberToObject(lo, "params", (double)all);
        cJSON_AddItemToArray(la, lo);
    }

    totals t = count(m);
    cJSON *to = cJSON_AddObjectToObject(o, "totals");
    cJSON_AddItemToObject(to, "embedding", json_tensor_ref(m->tok_embd));
    cJSON_AddItemToObject(to, "output", t.head ? json_tensor_ref(m->output) : cJSON_CreateString("tied"));
    cJSON_AddNumberToObject(to, "embedding_params", (double)t.embedding);
    cJSON_AddNumberToObject(to, "head_params", (double)t.head);
    cJSON_AddNumberToObject(to, "final_norm_params", (double)t.final_norm);
    cJSON_AddNumberToObject(to, "module_params", (double)t.modules);
    cJSON_AddNumberToObject(to, "layer_params", (double)(t.modules + t.layer_rest));
    cJSON_AddNumberToObject(to, "params", (double)t.all);
    cJSON_AddNumberToObject(to, "file_params", (double)t.file);
    cJSON_AddNumberToObject(to, "file_tensor_bytes", (double)t.file_bytes);
    cJSON_AddNumberToObject(to, "n_tensors", m->n_tensors);

    if (tensors) {
        const lm_tensor **v = sorted_tensors(m);
        if (!v) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON *ta = cJSON_AddArrayToObject(o, "tensors");
        for (int i = 0; i < m->n_tensors; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", v[i]->name);
            cJSON_AddStringToObject(x, "dtype", dtype_of(v[i]));
            cJSON_AddItemToObject(x, "shape", json_shape(v[i]));
            cJSON_AddNumberToObject(x, "bytes", (double)v[i]->nbytes);
            cJSON_AddStringToObject(x, "file", v[i]->path);
            if (v[i]->qk_perm_heads) cJSON_AddNumberToObject(x, "qk_perm_heads", v[i]->qk_perm_heads);
            tensor_note(buf, sizeof buf, m, v[i]);
            if (!strcmp(buf, "not used")) cJSON_AddBoolToObject(x, "used", 0);
            cJSON_AddItemToArray(ta, x);
        }
        free(v);
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* Command                                                                   */
/* ------------------------------------------------------------------------ */

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int tensors = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tensors")) {
            tensors = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("inspect: unknown option '%s' (see layermap inspect --help)", a);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            cli_errorf("inspect: one model at a time ('%s' and '%s')", path, a);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    lm_model *m;
    lm_err err = {0};
    char hub_path[4096], hub_name[256];
    if (cli_resolve_model(&path, hub_path, sizeof hub_path, hub_name, sizeof hub_name)) return 1;
    if (lm_model_open(&m, path, &err)) return cli_error(&err);
    if (hub_name[0]) snprintf(m->name, sizeof m->name, "%s", hub_name);
    int rc = 0;
    if (json) {
        cJSON *o = build_json(m, tensors);
        char *s = o ? cJSON_Print(o) : NULL;
        if (s)
            printf("%s\n", s);
        else
            rc = cli_errorf("inspect: out of memory while building JSON");
        cJSON_free(s);
        cJSON_Delete(o);
    } else {
        print_text(m, tensors);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) rc = cli_errorf("inspect: cannot write to standard output");
    lm_model_close(m);
    return rc;
}

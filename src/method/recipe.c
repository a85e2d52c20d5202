/*
 * recipe.c -- a quantization recipe for llama.cpp from an attribution matrix
 * (layermap.h, "Quantization recipe"): the type ladder with ggml's block
 * sizes, the error model, the greedy over each tensor's convex hull, and
 * llama-quantize's --tensor-type-file.
 *
 * The greedy: tensor i at hull rung k costs bytes_i(k) and does damage
 * I_i * err(k). A step k -> k+1 removes I_i * (err(k) - err(k+1)) for
 * bytes_i(k+1) - bytes_i(k). Each round scans every tensor's next step and
 * takes the one with the most damage removed per byte that fits the bytes
 * left (strictly more: ties keep the lower tensor); a tensor whose next step
 * does not fit is closed. On the lower convex hull the removal per byte
 * decreases along the ladder, so this is the greedy of the Lagrangian of the
 * multiple-choice knapsack. Tensors are few (7 x layers + 2) and ladders short
 * (<= 12 rungs): each round is O(tensors), at most tensors x rungs rounds.
 */
#include "base/base.h"
#include "model/model.h"

#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* The type ladder and the error model                                       */
/* ------------------------------------------------------------------------ */

/* Expectations for n independent N(0, 1) values (numerical integration):
 * E[max |x|] and E[max x - min x] for groups of 32 and 16. */
#define EMAX_ABS_32 2.3471292
#define EMAX_ABS_16 2.0772545
#define ERANGE_32 4.1393377
#define ERANGE_16 3.5319828

/* Relative MSE of round-to-nearest with step s (sigma = 1): s^2 / 12. */
#define RTN(step) ((step) * (step) / 12.0)
/* symmetric, b bits, levels -2^(b-1) .. 2^(b-1) - 1 over [-max|x|, max|x|]: step 2 M / 2^b */
#define SYM(m, b) RTN(2.0 * (m) / (double)(1 << (b)))
/* with a minimum, b bits, 2^b levels over [min, max]: step R / (2^b - 1) */
#define ASYM(r, b) RTN((r) / (double)((1 << (b)) - 1))

/* Indexed by lm_qtype. Bytes per block from ggml-common.h's static_asserts:
 * q4_0 = half + 16, q4_1 = 2 half + 16, q5_0 = half + u32 + 16,
 * q5_1 = 2 half + u32 + 16, q8_0 = half + 32; q2_k = 2 half + 16 + 64,
 * q3_k = half + 64 + 32 + 12, q4_k = 2 half + 12 + 128,
 * q5_k = 2 half + 12 + 128 + 32, q6_k = half + 16 + 192. */
static const lm_qtype_info qtypes[LM_QT_COUNT] = {
    [LM_QT_Q2_K] = {"q2_k", 256, 84, ASYM(ERANGE_16, 2)},
    [LM_QT_Q3_K] = {"q3_k", 256, 110, SYM(EMAX_ABS_16, 3)},
    [LM_QT_Q4_0] = {"q4_0", 32, 18, SYM(EMAX_ABS_32, 4)},
    [LM_QT_Q4_1] = {"q4_1", 32, 20, ASYM(ERANGE_32, 4)},
    [LM_QT_Q4_K] = {"q4_k", 256, 144, ASYM(ERANGE_32, 4)},
    [LM_QT_Q5_0] = {"q5_0", 32, 22, SYM(EMAX_ABS_32, 5)},
    [LM_QT_Q5_1] = {"q5_1", 32, 24, ASYM(ERANGE_32, 5)},
    [LM_QT_Q5_K] = {"q5_k", 256, 176, ASYM(ERANGE_32, 5)},
    [LM_QT_Q6_K] = {"q6_k", 256, 210, SYM(EMAX_ABS_16, 6)},
    /* q8_0: d = max|x| / 127, levels -127..127: step 2 M / 254 */
    [LM_QT_Q8_0] = {"q8_0", 32, 34, RTN(2.0 * EMAX_ABS_32 / 254.0)},
    /* relative rounding error uniform in +-2^-p: mean square 2^(-2p) / 3 */
    [LM_QT_F16] = {"f16", 1, 2, 1.0 / (3.0 * 4194304.0)}, /* p = 11: 2^22 */
    [LM_QT_BF16] = {"bf16", 1, 2, 1.0 / (3.0 * 65536.0)}, /* p = 8: 2^16 */
};

const lm_qtype_info *lm_qtype_get(lm_qtype t) { return (int)t >= 0 && t < LM_QT_COUNT ? &qtypes[t] : NULL; }

int lm_qtype_parse(const char *s, lm_qtype *out, lm_err *err) {
    for (int t = 0; s && t < LM_QT_COUNT; t++)
        if (!strcasecmp(s, qtypes[t].name)) {
            *out = (lm_qtype)t;
            return LM_OK;
        }
    return lm_fail(err, LM_EARG,
                   "unknown type '%s' (types: q2_k q3_k q4_0 q4_1 q4_k q5_0 q5_1 q5_k q6_k q8_0 f16 bf16)",
                   s ? s : "");
}

/* Does type t fit rows of ne0 values? */
static int fits(lm_qtype t, int64_t ne0) { return ne0 > 0 && ne0 % qtypes[t].block == 0; }

/* Bytes of a (ne1, ne0) tensor at type t (t fits). */
static int64_t tensor_bytes(lm_qtype t, int64_t ne0, int64_t ne1) {
    return ne1 * (ne0 / qtypes[t].block) * qtypes[t].bytes;
}

/* The lower convex hull of (bpw, err) over the types that fit ne0, cheapest
 * first, into hull[]; returns its length (0: none fits). Per tensor the hull
 * in (bytes, I * err) is this one scaled, so it does not depend on I. */
static int ladder(int64_t ne0, lm_qtype hull[LM_QT_COUNT]) {
    /* the fitting types by bpw, then err */
    lm_qtype c[LM_QT_COUNT];
    int n = 0;
    for (int t = 0; t < LM_QT_COUNT; t++)
        if (fits((lm_qtype)t, ne0)) c[n++] = (lm_qtype)t;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0; j--) {
            double bj = (double)qtypes[c[j]].bytes / qtypes[c[j]].block;
            double bk = (double)qtypes[c[j - 1]].bytes / qtypes[c[j - 1]].block;
            if (bj < bk || (bj == bk && qtypes[c[j]].err < qtypes[c[j - 1]].err)) {
                lm_qtype x = c[j];
                c[j] = c[j - 1];
                c[j - 1] = x;
            }
        }
    int h = 0;
    for (int i = 0; i < n; i++) {
        double x = (double)qtypes[c[i]].bytes / qtypes[c[i]].block, y = qtypes[c[i]].err;
        if (h && y >= qtypes[hull[h - 1]].err) continue; /* costs no less and errs no less: dominated */
        /* drop the last rung while it lies on or above the segment from the one before it to here */
        while (h >= 2) {
            double x1 = (double)qtypes[hull[h - 2]].bytes / qtypes[hull[h - 2]].block, y1 = qtypes[hull[h - 2]].err;
            double x2 = (double)qtypes[hull[h - 1]].bytes / qtypes[hull[h - 1]].block, y2 = qtypes[hull[h - 1]].err;
            if ((y2 - y1) * (x - x1) >= (y - y1) * (x2 - x1)) h--;
            else break;
        }
        hull[h++] = c[i];
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Selection                                                                 */
/* ------------------------------------------------------------------------ */

void lm_recipe_opts_default(lm_recipe_opts *o) {
    *o = (lm_recipe_opts){.bpw = 0, .per_weight = 0, .embd_type = -1, .output_type = -1};
}

void lm_recipe_free(lm_recipe *r) {
    if (!r) return;
    lm_free(r->t);
    memset(r, 0, sizeof *r);
}

/* The fixed type of token_embd / output: the option, else the rule. */
static int fixed_type(const lm_recipe_tensor *t, const lm_recipe_opts *o, lm_qtype *out, lm_err *err) {
    int opt = t->module == LM_RECIPE_OUTPUT ? o->output_type : o->embd_type;
    if (opt >= 0) {
        if (opt >= LM_QT_COUNT) return lm_fail(err, LM_EARG, "recipe: type %d out of range", opt);
        if (!fits((lm_qtype)opt, t->ne0))
            return lm_fail(err, LM_EARG, "recipe: %s has rows of %lld values, not a multiple of %s's block of %d",
                           t->name, (long long)t->ne0, qtypes[opt].name, qtypes[opt].block);
        *out = (lm_qtype)opt;
        return LM_OK;
    }
    lm_qtype k = t->module == LM_RECIPE_OUTPUT ? LM_QT_Q6_K : LM_QT_Q4_K;
    lm_qtype b = t->module == LM_RECIPE_OUTPUT ? LM_QT_Q8_0 : LM_QT_Q4_0;
    *out = fits(k, t->ne0) ? k : fits(b, t->ne0) ? b : LM_QT_F16;
    return LM_OK;
}

/* See layermap.h. */
int lm_recipe_select(const lm_matrix *m, const lm_recipe_tensor *in, int n, const lm_recipe_opts *o,
                     lm_recipe *out, lm_err *err) {
    memset(out, 0, sizeof *out);
    if (!m || !in || !o || n < 1) return lm_fail(err, LM_EARG, "recipe: no matrix, tensors or options");
    if (!(o->bpw > 0) || !isfinite(o->bpw))
        return lm_fail(err, LM_EARG, "recipe: the budget must be a positive number of bits per weight");
    /* tensor table [n] plus per tensor: hull [LM_QT_COUNT], rung, open */
    lm_recipe_tensor *t = lm_malloc((size_t)n * sizeof *t);
    lm_qtype(*hull)[LM_QT_COUNT] = lm_malloc((size_t)n * sizeof *hull);
    int *nh = lm_malloc((size_t)n * sizeof *nh), *rung = lm_calloc((size_t)n, sizeof *rung);
    if (!t || !hull || !nh || !rung) {
        lm_free(t);
        lm_free(hull);
        lm_free(nh);
        lm_free(rung);
        return lm_nomem(err, (size_t)n * (sizeof *t + sizeof *hull + 2 * sizeof(int)), "recipe");
    }
    memcpy(t, in, (size_t)n * sizeof *t);
    int rc = LM_OK;
    int64_t weights = 0, bytes = 0, fixed_bytes = 0;
    for (int i = 0; i < n && !rc; i++) {
        lm_recipe_tensor *x = &t[i];
        x->name[sizeof x->name - 1] = 0;
        if (x->ne0 < 1 || x->ne1 < 1 || x->ne0 > ((int64_t)1 << 40) || x->ne1 > ((int64_t)1 << 40)) {
            rc = lm_fail(err, LM_EARG, "recipe: %s has no shape", x->name);
            break;
        }
        weights += x->ne0 * x->ne1;
        if (x->module == LM_RECIPE_EMBD || x->module == LM_RECIPE_OUTPUT) {
            x->importance = NAN;
            rc = fixed_type(x, o, &x->type, err);
            if (!rc) fixed_bytes += tensor_bytes(x->type, x->ne0, x->ne1);
            nh[i] = 0;
            continue;
        }
        if (x->module < 0 || x->module >= LM_N_MODULES || x->layer < 0 || x->layer >= m->n_layer) {
            rc = lm_fail(err, LM_EARG, "recipe: %s: layer %d module %d is not a cell of the %d-layer matrix", x->name,
                         x->layer, x->module, m->n_layer);
            break;
        }
        double v = m->v[(size_t)x->layer * LM_N_MODULES + x->module];
        if (isnan(v)) {
            rc = lm_fail(err, LM_EARG, "recipe: the matrix has no value (NaN) for layer %d %s (%s)", x->layer,
                         lm_module_names[x->module], x->name);
            break;
        }
        if (isinf(v)) {
            rc = lm_fail(err, LM_EARG, "recipe: the matrix's value for layer %d %s is infinite", x->layer,
                         lm_module_names[x->module]);
            break;
        }
        x->importance = o->per_weight ? v * (double)x->ne0 * (double)x->ne1 : v;
        nh[i] = ladder(x->ne0, hull[i]);
        if (!nh[i]) {
            rc = lm_fail(err, LM_EARG, "recipe: %s has rows of %lld values: no type of the ladder fits", x->name,
                         (long long)x->ne0);
            break;
        }
        x->type = hull[i][0];
        bytes += tensor_bytes(x->type, x->ne0, x->ne1);
    }
    if (!rc) {
        double budget = floor(o->bpw * (double)weights / 8.0);
        double min_bpw = 8.0 * (double)(bytes + fixed_bytes) / (double)weights;
        if (budget < (double)(bytes + fixed_bytes))
            rc = lm_fail(err, LM_EARG,
                         "recipe: a budget of %.4g bits per weight is below the cheapest recipe, %.4f (every module "
                         "at its cheapest type, token_embd/output as fixed)",
                         o->bpw, min_bpw);
        out->budget_bytes = (int64_t)budget;
        out->min_bpw = min_bpw;
    }
    if (!rc) {
        int64_t left = out->budget_bytes - bytes - fixed_bytes;
        for (;;) {
            double best = -1;
            int bi = -1;
            for (int i = 0; i < n; i++) {
                if (rung[i] + 1 >= nh[i]) continue;
                const lm_recipe_tensor *x = &t[i];
                lm_qtype a = hull[i][rung[i]], b = hull[i][rung[i] + 1];
                int64_t cost = tensor_bytes(b, x->ne0, x->ne1) - tensor_bytes(a, x->ne0, x->ne1);
                if (cost > left) {
                    nh[i] = rung[i] + 1; /* closed */
                    continue;
                }
                double imp = x->importance > 0 ? x->importance : 0;
                double gain = imp * (qtypes[a].err - qtypes[b].err) / (double)cost;
                if (gain > best) {
                    best = gain;
                    bi = i;
                }
            }
            if (bi < 0) break;
            lm_recipe_tensor *x = &t[bi];
            lm_qtype a = hull[bi][rung[bi]], b = hull[bi][rung[bi] + 1];
            left -= tensor_bytes(b, x->ne0, x->ne1) - tensor_bytes(a, x->ne0, x->ne1);
            x->type = b;
            rung[bi]++;
        }
        out->n = n;
        out->t = t;
        out->weights = weights;
        out->bytes = out->budget_bytes - left;
        out->bpw = 8.0 * (double)out->bytes / (double)weights;
        for (int i = 0; i < n; i++)
            if (t[i].module >= 0) {
                double imp = t[i].importance > 0 ? t[i].importance : 0;
                out->damage += imp * qtypes[t[i].type].err;
                out->importance += imp;
            }
        t = NULL;
    }
    lm_free(t);
    lm_free(hull);
    lm_free(nh);
    lm_free(rung);
    return rc;
}

/* Does name end in suffix? */
static int ends_with(const char *name, const char *suffix) {
    size_t a = strlen(name), b = strlen(suffix);
    return a >= b && !strcmp(name + a - b, suffix);
}

/* See layermap.h. */
int lm_recipe_select_model(const lm_matrix *m, const lm_model *model, const lm_recipe_opts *o, lm_recipe *out,
                           lm_err *err) {
    memset(out, 0, sizeof *out);
    if (!m || !model || !o) return lm_fail(err, LM_EARG, "recipe: no matrix, model or options");
    int L = model->cfg.n_layer;
    if (m->n_layer != L)
        return lm_fail(err, LM_ESHAPE, "recipe: the matrix has %d layers but %s has %d", m->n_layer, model->path, L);
    if (m->layer_index)
        for (int l = 0; l < L; l++)
            if (m->layer_index[l] != l)
                return lm_fail(err, LM_ESHAPE, "recipe: the matrix's row %d is layer %d of %s: a recipe needs every layer",
                               l, m->layer_index[l], model->path);
    if (!model->tok_embd) return lm_fail(err, LM_EUNSUPPORTED, "%s: no token embedding", model->path);
    int tied = !model->output || model->output == model->tok_embd;
    int n = L * LM_N_MODULES + (tied ? 1 : 2);
    lm_recipe_tensor *t = lm_calloc((size_t)n, sizeof *t);
    if (!t) return lm_nomem(err, (size_t)n * sizeof *t, "recipe tensors");
    int gguf = !strcmp(model->format, "gguf"), k = 0, rc = LM_OK;
    for (int l = 0; l < L && !rc; l++)
        for (int c = 0; c < LM_N_MODULES; c++, k++) {
            const lm_tensor *w = model->layers[l].w[c];
            if (!w || w->ndim != 2) {
                rc = lm_fail(err, LM_EUNSUPPORTED, "%s: layer %d %s is not a 2-D weight", model->path, l,
                             lm_module_names[c]);
                break;
            }
            lm_model_gguf_name(model, l, c, t[k].name, sizeof t[k].name);
            t[k].layer = l;
            t[k].module = c;
            t[k].ne0 = lm_tensor_cols(w);
            t[k].ne1 = lm_tensor_rows(w);
        }
    for (int j = 0; j < (tied ? 1 : 2) && !rc; j++, k++) {
        const lm_tensor *w = j == 0 ? model->tok_embd : model->output;
        snprintf(t[k].name, sizeof t[k].name, "%s", gguf ? w->name : j == 0 ? "token_embd.weight" : "output.weight");
        t[k].layer = -1;
        t[k].module = j == 0 && !tied ? LM_RECIPE_EMBD : LM_RECIPE_OUTPUT;
        t[k].ne0 = lm_tensor_cols(w);
        t[k].ne1 = lm_tensor_rows(w);
    }
    /* any other weight llama-quantize would quantize (2-D or more, "weight", not a norm) */
    for (int i = 0; gguf && i < model->n_tensors && !rc; i++) {
        const lm_tensor *w = &model->tensors[i];
        if (w->ndim < 2 || !ends_with(w->name, "weight") || strstr(w->name, "_norm.weight")) continue;
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = !strcmp(t[j].name, w->name);
        if (!found)
            rc = lm_fail(err, LM_EUNSUPPORTED,
                         "%s: tensor '%s' is none of the modules, token_embd or output: a recipe would leave it out",
                         model->path, w->name);
    }
    if (!rc) rc = lm_recipe_select(m, t, n, o, out, err);
    lm_free(t);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* llama-quantize's --tensor-type-file                                       */
/* ------------------------------------------------------------------------ */

const char *lm_recipe_pattern(const char *name, char *buf, size_t size) {
    if (!size) return buf;
    size_t k = 0;
    const char *s = name;
    if (k + 1 < size) buf[k++] = '^';
    for (; *s && k + 1 < size; s++) {
        if (strchr(".[]{}()\\*+?|^$", *s)) {
            if (k + 2 >= size) break;
            buf[k++] = '\\';
        }
        buf[k++] = *s;
    }
    if (!*s && k + 1 < size) buf[k++] = '$';
    buf[k] = 0;
    return buf;
}

/* See layermap.h. */
int lm_recipe_write(const lm_recipe *r, const char *path, lm_err *err) {
    if (!r || !r->t || !path) return lm_fail(err, LM_EARG, "recipe: no recipe or path");
    for (int i = 0; i < r->n; i++)
        for (const char *s = r->t[i].name; *s; s++)
            if (isspace((unsigned char)*s) || *s == '=' || isupper((unsigned char)*s))
                /* llama-quantize splits on whitespace and the first '=', and lowercases names */
                return lm_fail(err, LM_EARG, "%s: tensor name '%s' cannot be written as a --tensor-type pattern", path,
                               r->t[i].name);
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) return rc;
    char pat[300];
    for (int i = 0; i < r->n; i++)
        fprintf(a.f, "%s=%s\n", lm_recipe_pattern(r->t[i].name, pat, sizeof pat), qtypes[r->t[i].type].name);
    return lm_atomic_commit(&a, err);
}

/*
 * lora.c -- where to put LoRA adapters, at which rank, under a parameter
 * budget (layermap.h, "LoRA placement"), and the PEFT LoraConfig JSON.
 *
 * The greedy: every cell has a ladder of steps 0 -> R -> 2R -> ... -> max.
 * A step from r to r' costs (r' - r) * (in + out) parameters and gains
 * v * (log2(1 + r'/R) - log2(1 + r/R)). Each round takes, over all cells, the
 * next step with the largest gain per parameter that fits the budget left; a
 * cell whose next step does not fit is closed. The gains per parameter of one
 * cell strictly decrease along its ladder (1, 0.585, 0.368, ... times
 * v / (R (in + out))), so a cell never wants a later step before an earlier one.
 * Cells are few (7 x layers): each round scans them all, O(cells * steps).
 */
#include "base/base.h"

#include <math.h>
#include <string.h>

static const char *const hf_names[LM_N_MODULES] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.up_proj",      "mlp.down_proj",    "mlp.gate_proj",
};

const char *lm_lora_hf_name(int module) { return module >= 0 && module < LM_N_MODULES ? hf_names[module] : "?"; }

/* The short name PEFT's target_modules uses: "q_proj", ... */
static const char *short_name(int module) {
    const char *d = strchr(hf_names[module], '.');
    return d + 1;
}

void lm_lora_opts_default(lm_lora_opts *o) {
    *o = (lm_lora_opts){.budget_params = 0, .rank = 8, .max_rank = 64, .per_param = 1, .alpha_ratio = 2};
}

void lm_lora_plan_free(lm_lora_plan *p) {
    if (!p) return;
    lm_free(p->rank);
    lm_free(p->in);
    lm_free(p->out);
    memset(p, 0, sizeof *p);
}

/* Value of rank r for a cell of value v: v * log2(1 + r / R). */
static double rank_value(double v, int r, int R) { return r ? v * log2(1.0 + (double)r / R) : 0; }

/* See layermap.h. */
int lm_lora_select(const lm_matrix *scores, const int64_t *in_dim, const int64_t *out_dim, const lm_lora_opts *o,
                   lm_lora_plan *plan, lm_err *err) {
    memset(plan, 0, sizeof *plan);
    if (!scores || !in_dim || !out_dim || !o) return lm_fail(err, LM_EARG, "lora: no matrix, dims or options");
    if (o->budget_params < 0) return lm_fail(err, LM_EARG, "lora: negative budget %lld", (long long)o->budget_params);
    if (o->rank < 1 || o->rank > 65536) return lm_fail(err, LM_EARG, "lora: rank %d is not in 1..65536", o->rank);
    if (o->max_rank < o->rank || o->max_rank > 65536)
        return lm_fail(err, LM_EARG, "lora: max rank %d is below rank %d or above 65536", o->max_rank, o->rank);
    if (!(o->alpha_ratio > 0) || !isfinite(o->alpha_ratio))
        return lm_fail(err, LM_EARG, "lora: alpha ratio must be a positive number");
    int L = scores->n_layer;
    size_t n = (size_t)L * LM_N_MODULES;
    for (size_t i = 0; i < n; i++)
        if (in_dim[i] < 1 || out_dim[i] < 1 || in_dim[i] > ((int64_t)1 << 40) || out_dim[i] > ((int64_t)1 << 40))
            return lm_fail(err, LM_EARG, "lora: layer %zu %s has no shape", i / LM_N_MODULES,
                           lm_module_names[i % LM_N_MODULES]);
    /* plan: rank/in/out [n]; v[n] and open[n] scratch */
    plan->rank = lm_calloc(n ? n : 1, sizeof *plan->rank);
    plan->in = lm_malloc((n ? n : 1) * sizeof *plan->in);
    plan->out = lm_malloc((n ? n : 1) * sizeof *plan->out);
    double *v = lm_malloc((n ? n : 1) * sizeof *v);
    unsigned char *open = lm_malloc(n ? n : 1);
    if (!plan->rank || !plan->in || !plan->out || !v || !open) {
        lm_free(v);
        lm_free(open);
        lm_lora_plan_free(plan);
        return lm_nomem(err, n * (3 * sizeof(int64_t) + sizeof(double) + 1), "lora plan");
    }
    plan->n_layer = L;
    plan->default_rank = o->rank;
    plan->alpha_ratio = o->alpha_ratio;
    for (size_t i = 0; i < n; i++) {
        plan->in[i] = in_dim[i];
        plan->out[i] = out_dim[i];
        double s = scores->v[i];
        v[i] = o->per_param ? s / ((double)in_dim[i] * (double)out_dim[i]) : s;
        open[i] = isfinite(v[i]) && v[i] > 0;
    }
    int64_t left = o->budget_params;
    const int R = o->rank;
    for (;;) {
        /* the best next step that fits */
        double best = 0;
        size_t bi = n;
        for (size_t i = 0; i < n; i++) {
            if (!open[i]) continue;
            int r = plan->rank[i], r2 = r ? 2 * r : R;
            int64_t full = plan->in[i] < plan->out[i] ? plan->in[i] : plan->out[i];
            if (r2 > o->max_rank || r2 > full) { /* a rank above min(in, out) adds nothing */
                open[i] = 0;
                continue;
            }
            int64_t cost = (int64_t)(r2 - r) * (plan->in[i] + plan->out[i]);
            if (cost > left) {
                open[i] = 0;
                continue;
            }
            double gain = (rank_value(v[i], r2, R) - rank_value(v[i], r, R)) / (double)cost;
            if (gain > best) { /* strict: ties keep the lower cell */
                best = gain;
                bi = i;
            }
        }
        if (bi == n) break;
        int r = plan->rank[bi], r2 = r ? 2 * r : R;
        left -= (int64_t)(r2 - r) * (plan->in[bi] + plan->out[bi]);
        plan->rank[bi] = r2;
    }
    plan->params = o->budget_params - left;
    plan->value = 0;
    for (size_t i = 0; i < n; i++) plan->value += rank_value(v[i], plan->rank[i], R);
    lm_free(v);
    lm_free(open);
    return LM_OK;
}

/* See layermap.h. */
int lm_lora_select_model(const lm_matrix *scores, const lm_model *m, const lm_lora_opts *o, lm_lora_plan *plan,
                         lm_err *err) {
    memset(plan, 0, sizeof *plan);
    if (!scores || !m) return lm_fail(err, LM_EARG, "lora: no matrix or model");
    if (m->cfg.n_layer != scores->n_layer)
        return lm_fail(err, LM_ESHAPE, "lora: the matrix has %d layers but %s has %d", scores->n_layer, m->path,
                       m->cfg.n_layer);
    size_t n = (size_t)scores->n_layer * LM_N_MODULES;
    int64_t *in = lm_malloc((n ? n : 1) * sizeof *in), *out = lm_malloc((n ? n : 1) * sizeof *out);
    if (!in || !out) {
        lm_free(in);
        lm_free(out);
        return lm_nomem(err, 2 * n * sizeof *in, "lora dims");
    }
    int rc = LM_OK;
    for (int l = 0; l < scores->n_layer && !rc; l++)
        for (int c = 0; c < LM_N_MODULES && !rc; c++) {
            const lm_tensor *t = m->layers[l].w[c];
            if (!t || t->ndim != 2) {
                rc = lm_fail(err, LM_EUNSUPPORTED, "%s: layer %d %s is not a 2-D weight", m->path, l, lm_module_names[c]);
                break;
            }
            out[(size_t)l * LM_N_MODULES + c] = t->shape[0];
            in[(size_t)l * LM_N_MODULES + c] = t->shape[1];
        }
    if (!rc) rc = lm_lora_select(scores, in, out, o, plan, err);
    lm_free(in);
    lm_free(out);
    return rc;
}

/* A number with no trailing zeros ("16", "2.5"). */
static void put_num(FILE *f, double x) {
    if (x == floor(x) && fabs(x) < 1e15) fprintf(f, "%.0f", x);
    else fprintf(f, "%.17g", x);
}

/* See layermap.h. */
int lm_lora_write_json(const lm_lora_plan *p, const lm_lora_opts *o, const char *path, lm_err *err) {
    if (!p || !p->rank || !path) return lm_fail(err, LM_EARG, "lora: no plan or path");
    int L = p->n_layer;
    int used_mod[LM_N_MODULES] = {0}, n_chosen = 0;
    unsigned char *used_layer = lm_calloc(L ? (size_t)L : 1, 1);
    if (!used_layer) return lm_nomem(err, (size_t)L, "lora layers");
    for (int l = 0; l < L; l++)
        for (int c = 0; c < LM_N_MODULES; c++)
            if (p->rank[(size_t)l * LM_N_MODULES + c]) {
                used_mod[c] = used_layer[l] = 1;
                n_chosen++;
            }
    if (!n_chosen) {
        lm_free(used_layer);
        return lm_fail(err, LM_EARG,
                       "%s: no module fits the budget of %lld parameters (the smallest adapter costs rank x (in + out))",
                       path, o ? (long long)o->budget_params : 0LL);
    }
    lm_atomic a;
    int rc = lm_atomic_open(&a, path, err);
    if (rc) {
        lm_free(used_layer);
        return rc;
    }
    FILE *f = a.f;
    const int R = p->default_rank;
    fputs("{\n  \"task_type\": \"CAUSAL_LM\",\n  \"r\": ", f);
    fprintf(f, "%d,\n  \"lora_alpha\": ", R);
    put_num(f, p->alpha_ratio * R);
    fputs(",\n  \"lora_dropout\": 0.0,\n  \"bias\": \"none\",\n  \"target_modules\": [", f);
    int first = 1;
    for (int c = 0; c < LM_N_MODULES; c++)
        if (used_mod[c]) {
            fprintf(f, "%s\"%s\"", first ? "" : ", ", short_name(c));
            first = 0;
        }
    fputs("],\n  \"layers_to_transform\": [", f);
    first = 1;
    for (int l = 0; l < L; l++)
        if (used_layer[l]) {
            fprintf(f, "%s%d", first ? "" : ", ", l);
            first = 0;
        }
    fputs("],\n  \"layers_pattern\": \"layers\",\n  \"exclude_modules\": [", f);
    /* the layers x modules product minus the chosen cells */
    first = 1;
    for (int l = 0; l < L; l++)
        for (int c = 0; c < LM_N_MODULES; c++)
            if (used_layer[l] && used_mod[c] && !p->rank[(size_t)l * LM_N_MODULES + c]) {
                fprintf(f, "%s\n    \"layers.%d.%s\"", first ? "" : ",", l, hf_names[c]);
                first = 0;
            }
    fputs(first ? "],\n" : "\n  ],\n", f);
    for (int pass = 0; pass < 2; pass++) {
        fputs(pass ? "  \"alpha_pattern\": {" : "  \"rank_pattern\": {", f);
        first = 1;
        for (int l = 0; l < L; l++)
            for (int c = 0; c < LM_N_MODULES; c++) {
                int r = p->rank[(size_t)l * LM_N_MODULES + c];
                if (!r || r == R) continue;
                fprintf(f, "%s\n    \"layers.%d.%s\": ", first ? "" : ",", l, hf_names[c]);
                if (pass) put_num(f, p->alpha_ratio * r);
                else fprintf(f, "%d", r);
                first = 0;
            }
        fputs(first ? "}" : "\n  }", f);
        fputs(pass ? "\n}\n" : ",\n", f);
    }

    lm_free(used_layer);
    return lm_atomic_commit(&a, err);
}

/*
 * test_stability.c -- how much data is enough: every data method's per-cell
 * standard error and split-half Spearman correlation (lm_matrix.se,
 * .split_half, .n_samples) against the definition computed here from
 * separate one-sequence runs; until_stable; a resumed run's statistics
 * identical to an uninterrupted one's; the JSON round trip.
 *
 * Definition: a run over N samples (one sequence each, batch 1) gives the
 * matrix S = sum_s x_s; se = sqrt(N / (N - 1) (sum_s x_s^2 - S^2 / N)) per
 * cell; split_half = Spearman(sum of odd samples, sum of even samples) with
 * average ranks for ties. The separate runs are the same arithmetic, so the
 * only difference is the order of the sums: the bounds are 1e-9 relative.
 */
#include "test.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#define NSEQ 9
#define SEQ 24

static int32_t toks[NSEQ][SEQ];
static uint8_t masks[NSEQ][SEQ];
static lm_seq seqs[NSEQ];

/* A dataset of the sequences [first, first + n). */
static lm_dataset data_of(int first, int n) {
    lm_dataset d = {0};
    d.seqs = seqs + first;
    d.n_seq = n;
    for (int s = first; s < first + n; s++) {
        d.n_tokens += seqs[s].n;
        for (int t = 0; t + 1 < seqs[s].n; t++) d.n_targets += seqs[s].mask[t] != 0;
    }
    return d;
}

/* Average ranks of v[0..n). */
static void ranks(const double *v, int n, double *r) {
    for (int i = 0; i < n; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < n; j++) less += v[j] < v[i], eq += v[j] == v[i];
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b, int n) {
    double ra[512], rb[512], m = (n + 1) / 2.0, sxy = 0, sxx = 0, syy = 0;
    ranks(a, n, ra);
    ranks(b, n, rb);
    for (int i = 0; i < n; i++) {
        sxy += (ra[i] - m) * (rb[i] - m);
        sxx += (ra[i] - m) * (ra[i] - m);
        syy += (rb[i] - m) * (rb[i] - m);
    }
    return sxy / sqrt(sxx * syy);
}

static double relerr(double got, double want) {
    return fabs(got - want) / (fabs(want) > 1e-300 ? fabs(want) : 1e-300);
}

/* One method: the run over every sequence against the definition. */
static void check_method(lm_engine *e, lm_method meth, int L) {
    lm_err err;
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    o.ig_steps = 4;
    lm_dataset all = data_of(0, NSEQ);
    lm_attr_result res;
    CHECK_OK(lm_attribute(e, &all, meth, &o, &res, &err), &err);
    if (!res.m) return;
    int LM7 = L * LM_N_MODULES;
    double x[NSEQ][512], S[512] = {0}, S2[512] = {0}, h[2][512] = {{0}};
    for (int s = 0; s < NSEQ; s++) {
        lm_dataset one = data_of(s, 1);
        lm_attr_result r1;
        CHECK_OK(lm_attribute(e, &one, meth, &o, &r1, &err), &err);
        if (!r1.m) return;
        for (int i = 0; i < LM7; i++) {
            x[s][i] = r1.m->v[i];
            S[i] += x[s][i];
            S2[i] += x[s][i] * x[s][i];
            h[s % 2][i] += x[s][i];
        }
        CHECK(r1.n_samples == 1 && r1.m->se && isnan(r1.m->se[0]) && isnan(r1.split_half),
              "%s: one sample: se NaN, split-half NaN", lm_method_names[meth]);
        lm_attr_result_free(&r1);
    }
    if (meth == LM_METHOD_ABLATE_MEAN) {
        /* the means come from the whole data: one-sequence runs are not its samples */
        CHECK(res.m->se && res.n_samples == NSEQ, "ablate-mean: %d samples", res.n_samples);
        lm_attr_result_free(&res);
        return;
    }
    CHECK(res.n_samples == NSEQ && res.m->n_samples == NSEQ, "%s: %d samples, want %d", lm_method_names[meth],
          res.n_samples, NSEQ);
    CHECK(res.m->se != NULL, "%s: no standard errors", lm_method_names[meth]);
    if (!res.m->se) return;
    double worst = 0, worst_v = 0;
    for (int i = 0; i < LM7; i++) {
        double N = NSEQ, var = N / (N - 1) * (S2[i] - S[i] * S[i] / N), want = var > 0 ? sqrt(var) : 0;
        double scale = sqrt(S2[i] / N) + 1e-300; /* the size of one sample's contribution */
        worst = fmax(worst, fabs(res.m->se[i] - want) / scale);
        worst_v = fmax(worst_v, relerr(res.m->v[i], S[i]));
    }
    double rho = spearman(h[0], h[1], LM7);
    printf("  %-12s se max err %.2g (of a sample's size), split-half %.4f (here %.4f), sum rel err %.2g\n",
           lm_method_names[meth], worst, res.split_half, rho, worst_v);
    CHECK(worst_v <= 1e-9, "%s: the run's sums differ from the separate runs' (%.3g)", lm_method_names[meth], worst_v);
    CHECK(worst <= 1e-6, "%s: standard error differs from the definition by %.3g", lm_method_names[meth], worst);
    /* ties or near-ties could reorder under a different summation order: compare the values closely,
     * then the correlation within what one swapped pair of ranks can change (6 / (n (n^2 - 1)) * 2) */
    double swap = 12.0 / ((double)LM7 * ((double)LM7 * LM7 - 1)) * LM7;
    CHECK(fabs(res.split_half - rho) <= swap + 1e-12, "%s: split-half %.6f, definition %.6f", lm_method_names[meth],
          res.split_half, rho);
    CHECK(res.m->split_half == res.split_half, "split-half in the matrix and the result");
    lm_attr_result_free(&res);
}

static void check_until_stable(lm_engine *e) {
    lm_err err;
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    lm_dataset all = data_of(0, NSEQ);
    lm_attr_result res;
    /* a bound every split-half correlation meets: stops after 8 + 2 samples... of 9: at the 8th, 9th */
    o.until_stable = 1e-9;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_GRAD_WEIGHT, &o, &res, &err), &err);
    double rho = res.split_half;
    int n = res.n_seq_done, st = res.stopped_stable;
    lm_attr_result_free(&res);
    /* samples 8 and 9 can meet it, but 3 in a row need 10 > 9: the data ends first */
    CHECK(n == NSEQ && !st && rho > 0, "until-stable beyond the data: %d sequences, stopped %d", n, st);
    /* a bound no correlation can meet: reads everything */
    o.until_stable = 1.0 + 1e-9;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_GRAD_WEIGHT, &o, &res, &err), &err);
    CHECK(res.n_seq_done == NSEQ && !res.stopped_stable && res.complete, "unreachable bound reads all data");
    lm_attr_result_free(&res);
}

/* 20 sequences of a fixed pattern: stop at sample 10 (8 + 3 - 1). */
static void check_until_stable_stops(lm_model *m) {
    enum { N = 20 };
    static int32_t tk[N][SEQ];
    static uint8_t mk[N][SEQ];
    static lm_seq sq[N];
    lm_dataset d = {0};
    for (int s = 0; s < N; s++) {
        for (int i = 0; i < SEQ; i++) {
            tk[s][i] = (int32_t)((5 * (s % 3) + 7 * i + 1) % m->cfg.vocab);
            mk[s][i] = i + 1 < SEQ;
        }
        sq[s] = (lm_seq){tk[s], mk[s], SEQ};
        d.n_tokens += SEQ;
        d.n_targets += SEQ - 1;
    }
    d.seqs = sq;
    d.n_seq = N;
    lm_engine *e = NULL;
    lm_err err;
    lm_engine_opts eo = {.threads = 1, .max_seq = SEQ};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (!e) return;
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    o.until_stable = 1e-9; /* met by any positive correlation: the halves hold the same 3 repeating sequences */
    lm_attr_result res;
    CHECK_OK(lm_attribute(e, &d, LM_METHOD_FISHER, &o, &res, &err), &err);
    printf("  until-stable: stopped after %d of %d sequences (split-half %.4f)\n", res.n_seq_done, N, res.split_half);
    CHECK(res.stopped_stable && res.complete && res.n_seq_done == 10 && res.n_samples == 10,
          "until-stable stops at the 10th sample: %d sequences, stopped %d", res.n_seq_done, res.stopped_stable);
    lm_attr_result_free(&res);
    lm_engine_free(e);
}

/* Interrupted after 4 sequences and resumed: se and split-half identical. */
static void check_resume(lm_engine *e, const char *scratch) {
    char ck[1024];
    snprintf(ck, sizeof ck, "%s/stab.ckpt", scratch);
    unlink(ck);
    lm_err err;
    lm_dataset all = data_of(0, NSEQ);
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    lm_attr_result whole, part, rest;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_ACT_SQ, &o, &whole, &err), &err);
    o.checkpoint_path = ck;
    o.max_seqs = 4;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_ACT_SQ, &o, &part, &err), &err);
    CHECK(!part.complete, "stopped after 4");
    lm_attr_result_free(&part);
    o.max_seqs = 0;
    o.resume = 1;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_ACT_SQ, &o, &rest, &err), &err);
    int L = rest.m ? rest.m->n_layer : 0;
    CHECK(whole.m && rest.m && whole.m->se && rest.m->se &&
              !memcmp(whole.m->se, rest.m->se, sizeof(double) * (size_t)L * LM_N_MODULES) &&
              whole.split_half == rest.split_half && rest.n_samples == NSEQ,
          "resumed: standard errors and split-half identical to the uninterrupted run");
    /* JSON round trip */
    char js[1100];
    snprintf(js, sizeof js, "%s/stab.json", scratch);
    CHECK_OK(lm_matrix_write_json(rest.m, js, &err), &err);
    lm_matrix *back = NULL;
    CHECK_OK(lm_matrix_read_json(&back, js, &err), &err);
    CHECK(back && back->se && !memcmp(back->se, rest.m->se, sizeof(double) * (size_t)L * LM_N_MODULES) &&
              back->split_half == rest.m->split_half && back->n_samples == NSEQ,
          "JSON keeps se, split_half and samples exactly");
    /* normalising scales se with the cells */
    if (back && back->se) {
        double v0 = back->v[0], s0 = back->se[0];
        CHECK_OK(lm_matrix_normalize(back, LM_NORM_LAYER, &err), &err);
        CHECK(fabs(back->se[0] / back->v[0] - s0 / v0) <= 1e-12 * fabs(s0 / v0), "se scaled with the cell");
    }
    lm_matrix_free(back);
    lm_attr_result_free(&whole);
    lm_attr_result_free(&rest);
}

int main(void) {
    char p[1024];
    lm_model *m = NULL;
    lm_err err;
    CHECK_OK(lm_model_open(&m, model_path(p, sizeof p, "stories260K.gguf"), &err), &err);
    if (!m) return TEST_END();
    for (int s = 0; s < NSEQ; s++) {
        int n = SEQ - (s % 4);
        for (int i = 0; i < n; i++) {
            toks[s][i] = (int32_t)((31 * s + 13 * i + 7) % m->cfg.vocab);
            masks[s][i] = i + 1 < n;
        }
        seqs[s] = (lm_seq){toks[s], masks[s], n};
    }
    lm_engine *e = NULL;
    lm_engine_opts eo = {.threads = 1, .max_seq = SEQ};
    CHECK_OK(lm_engine_new(&e, m, &eo, &err), &err);
    if (!e) return TEST_END();
    int L = m->cfg.n_layer;
    const lm_method ms[] = {LM_METHOD_GRAD_WEIGHT, LM_METHOD_FISHER, LM_METHOD_GRAD_NORM, LM_METHOD_ACT_GRAD,
                            LM_METHOD_ACT_SQ,      LM_METHOD_ABLATE, LM_METHOD_IG,        LM_METHOD_ABLATE_MEAN};
    for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) check_method(e, ms[k], L);
    /* wanda's matrix is not a sum over samples: no standard errors */
    lm_dataset all = data_of(0, NSEQ);
    lm_attr_opts o;
    lm_attr_opts_default(&o);
    lm_attr_result r;
    CHECK_OK(lm_attribute(e, &all, LM_METHOD_WANDA, &o, &r, &err), &err);
    CHECK(r.m && !r.m->se && isnan(r.m->split_half), "wanda: no standard errors");
    lm_attr_result_free(&r);
    check_until_stable(e);
    check_until_stable_stops(m);
    const char *scratch = scratch_dir();
    check_resume(e, scratch);
    lm_engine_free(e);
    lm_model_close(m);
    return TEST_END();
}

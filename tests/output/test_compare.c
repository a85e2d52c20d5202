/*
 * test_compare.c -- lm_compare against scipy (tests/ref/gen_compare_ref.py:
 * spearmanr, kendalltau tau-b, top-k with the same tie rule) on matrices with
 * ties and NaN cells, hand-computed small cases, errors, the table writer, and
 * the `compare` command's exit codes and messages.
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"

#include <sys/stat.h>
#include <sys/wait.h>

/* Read one matrix by extension; NULL (and a failed check) on error. */
static lm_matrix *load(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "tests/data/compare/%s", name);
    lm_matrix *m = NULL;
    lm_err err = {0};
    int rc = lm_ends_with(p, ".csv") ? lm_matrix_read_csv(&m, p, &err) : lm_matrix_read_json(&m, p, &err);
    CHECK(rc == 0, "read %s: %s", p, err.msg);
    return rc ? NULL : m;
}

/* Every line of ref.csv: lm_compare equals scipy. The arithmetic is a few
 * hundred double operations on small integers and ranks: 1e-12 is ample. */
static void test_reference(void) {
    FILE *f = fopen("tests/data/compare/ref.csv", "r");
    CHECK(f != NULL, "tests/data/compare/ref.csv is missing (run tests/ref/gen_compare_ref.py)");
    if (!f) return;
    char line[1024];
    int rows = 0;
    CHECK(fgets(line, sizeof line, f) && !strncmp(line, "a,b,k,n,", 8), "ref.csv header");
    while (fgets(line, sizeof line, f)) {
        char an[64], bn[64];
        int k, n;
        double rho, tau, top;
        if (sscanf(line, "%63[^,],%63[^,],%d,%d,%lf,%lf,%lf", an, bn, &k, &n, &rho, &tau, &top) != 7) {
            CHECK(0, "ref.csv: bad line '%s'", line);
            continue;
        }
        lm_matrix *a = load(an), *b = load(bn);
        if (a && b) {
            lm_compare_stats st;
            lm_err err = {0};
            CHECK_OK(lm_compare(a, b, k, &st, &err), &err);
            char what[200];
            snprintf(what, sizeof what, "%s vs %s k=%d", an, bn, k);
            CHECK(st.n == n, "%s: n %d want %d", what, st.n, n);
            CHECK(st.k == (k < n ? k : n), "%s: k %d", what, st.k);
            CHECK_CLOSE(st.spearman, rho, 1e-12, 0, what);
            CHECK_CLOSE(st.kendall, tau, 1e-12, 0, what);
            CHECK_CLOSE(st.topk, top, 1e-15, 0, what);
            /* symmetric */
            lm_compare_stats rs;
            CHECK_OK(lm_compare(b, a, k, &rs, &err), &err);
            CHECK(rs.spearman == st.spearman && rs.kendall == st.kendall && rs.topk == st.topk, "%s: symmetric",
                  what);
        }
        lm_matrix_free(a);
        lm_matrix_free(b);
        rows++;
    }
    fclose(f);
    CHECK(rows == 24, "ref.csv has %d rows, expected 24 (6 pairs x 4 k)", rows);
}

/* A 1-layer matrix from 7 values. */
static lm_matrix *row(const double v[7]) {
    lm_matrix *m = lm_matrix_new(1);
    for (int c = 0; c < 7; c++) m->v[c] = v[c];
    return m;
}

/* Cases worked by hand. */
static void test_hand(void) {
    lm_err err = {0};
    lm_compare_stats st;
    /* identical order: 1, 1, 1 */
    double x[7] = {1, 2, 3, 4, 5, 6, 7}, y[7] = {10, 20, 30, 40, 50, 60, 70};
    lm_matrix *a = row(x), *b = row(y);
    CHECK_OK(lm_compare(a, b, 3, &st, &err), &err);
    CHECK(st.n == 7 && st.spearman == 1 && st.kendall == 1 && st.topk == 1, "identical order: %g %g %g",
          st.spearman, st.kendall, st.topk);
    /* reversed: -1, -1; top-3 {4,5,6} vs {0,1,2}: 0 */
    for (int c = 0; c < 7; c++) b->v[c] = -x[c];
    CHECK_OK(lm_compare(a, b, 3, &st, &err), &err);
    CHECK(st.spearman == -1 && st.kendall == -1 && st.topk == 0, "reversed: %g %g %g", st.spearman, st.kendall,
          st.topk);
    /* x = 1 2 3 NaN ..., y = 1 3 2: only 3 pairs. C = 2, D = 1: tau = 1/3;
     * ranks (1,2,3) vs (1,3,2): d^2 = 2, rho = 1 - 6*2/(3*8) = 0.5 */
    double x2[7] = {1, 2, 3, NAN, 5, 6, 7}, y2[7] = {1, 3, 2, 4, NAN, NAN, NAN};
    lm_matrix *c = row(x2), *d = row(y2);
    CHECK_OK(lm_compare(c, d, 2, &st, &err), &err);
    CHECK(st.n == 3, "pairwise NaN: n %d", st.n);
    CHECK_CLOSE(st.kendall, 1.0 / 3, 1e-15, 0, "tau 1/3");
    CHECK_CLOSE(st.spearman, 0.5, 1e-15, 0, "rho 1/2");
    /* top-2: {2, 1} in x vs {1, 2} in y -> 1 */
    CHECK(st.topk == 1, "top-2 %g", st.topk);
    /* ties at the cut: x all equal except one; top-1 of x is cell 6 */
    double x3[7] = {0, 0, 0, 0, 0, 0, 1}, y3[7] = {5, 5, 5, 5, 5, 5, 5};
    lm_matrix *e = row(x3), *g = row(y3);
    CHECK_OK(lm_compare(e, g, 1, &st, &err), &err);
    CHECK(isnan(st.spearman) && isnan(st.kendall), "constant side: NaN (%g %g)", st.spearman, st.kendall);
    /* y constant: its top-1 by the tie rule is cell 0, x's is cell 6 */
    CHECK(st.topk == 0, "tie rule at the cut: %g", st.topk);
    CHECK_OK(lm_compare(g, g, 2, &st, &err), &err);
    CHECK(st.topk == 1, "same ties, same cut");
    /* tau-b with ties in both: x = 1 1 2 2, y = 1 2 1 2 (+3 NaN): C = 1, D = 1 -> 0 */
    double x4[7] = {1, 1, 2, 2, NAN, NAN, NAN}, y4[7] = {1, 2, 1, 2, 0, 0, 0};
    lm_matrix *h = row(x4), *i = row(y4);
    CHECK_OK(lm_compare(h, i, 10, &st, &err), &err);
    CHECK(st.n == 4 && st.k == 4 && st.kendall == 0 && st.spearman == 0, "tied square: %g %g", st.kendall,
          st.spearman);
    /* all NaN: n 0, everything NaN */
    double nn[7] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    lm_matrix *z = row(nn);
    CHECK_OK(lm_compare(z, a, 10, &st, &err), &err);
    CHECK(st.n == 0 && isnan(st.spearman) && isnan(st.kendall) && isnan(st.topk), "all NaN");
    /* errors */
    lm_matrix *two = lm_matrix_new(2);
    snprintf(a->model, sizeof a->model, "left");
    snprintf(two->model, sizeof two->model, "right");
    CHECK(lm_compare(a, two, 10, &st, &err) == LM_ESHAPE && strstr(err.msg, "left") && strstr(err.msg, "right"),
          "layer mismatch: %s", err.msg);
    CHECK(lm_compare(a, b, 0, &st, &err) == LM_EARG, "k 0");
    /* fault injection: every allocation failure is LM_ENOMEM, then it works */
    for (long nth = 1;; nth++) {
        lm_fault_arm(nth);
        int rc = lm_compare(a, b, 3, &st, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        if (!hits) {
            CHECK(rc == LM_OK, "no fault: ok");
            break;
        }
        CHECK(rc == LM_ENOMEM, "fault %ld: rc %d", nth, rc);
    }
    lm_matrix *all[] = {a, b, c, d, e, g, h, i, z, two};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) lm_matrix_free(all[k]);
}

/* Read a whole file (static buffer). */
static const char *slurp(const char *p) {
    static char buf[65536];
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* lm_compare_write: csv and json, NaN empty / null, bad extension. */
static void test_write(void) {
    lm_compare_stats st[3] = {{.n = 7, .k = 2, .spearman = 0.5, .kendall = NAN, .topk = 1},
                              {.n = 0, .k = 0, .spearman = NAN, .kendall = NAN, .topk = NAN},
                              {.n = 3, .k = 3, .spearman = -1, .kendall = -1, .topk = 0}};
    const char *names[3] = {"x.csv", "y,z.json", "w"};
    char p[1024];
    lm_err err = {0};
    snprintf(p, sizeof p, "%s/t.csv", scratch_dir());
    CHECK_OK(lm_compare_write(names, 3, st, p, &err), &err);
    const char *s = slurp(p);
    CHECK(s && !strcmp(s, "a,b,n,k,spearman,kendall,topk\n"
                          "x.csv,\"y,z.json\",7,2,0.5,,1\n"
                          "x.csv,w,0,0,,,\n"
                          "\"y,z.json\",w,3,3,-1,-1,0\n"),
          "csv: %s", s ? s : "(none)");
    snprintf(p, sizeof p, "%s/t.json", scratch_dir());
    CHECK_OK(lm_compare_write(names, 3, st, p, &err), &err);
    s = slurp(p);
    CHECK(s && strstr(s, "{\"a\": \"x.csv\", \"b\": \"y,z.json\", \"n\": 7, \"k\": 2, \"spearman\": 0.5, "
                         "\"kendall\": null, \"topk\": 1}"),
          "json: %s", s ? s : "(none)");
    snprintf(p, sizeof p, "%s/t.txt", scratch_dir());
    CHECK(lm_compare_write(names, 3, st, p, &err) == LM_EARG && strstr(err.msg, "t.txt"), "bad extension");
    CHECK(lm_compare_write(names, 3, st, "/nonexistent-dir/x.csv", &err) == LM_EIO, "unwritable: %s", err.msg);
}

/* The command: table, -o, exit codes, one-line errors. */
static void test_cli(void) {
    const char *bin = getenv("LM_BIN");
    if (!bin || !*bin) bin = "build/layermap";
    char cmd[2048], out[16384];
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv tests/data/compare/c.json --top 5 -o %s/c.csv", bin,
             scratch_dir());
    int rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 0 && strstr(out, "spearman") && strstr(out, "(k=5)"), "compare: rc %d %s", rc, out);
    char p[1024];
    snprintf(p, sizeof p, "%s/c.csv", scratch_dir());
    const char *s = slurp(p);
    CHECK(s && strstr(s, "tests/data/compare/a.csv,tests/data/compare/c.json,26,5,"), "compare -o: %s",
          s ? s : "(none)");
    /* mismatched layers: one line naming both files, exit 1 */
    FILE *f = fopen((snprintf(p, sizeof p, "%s/two.csv", scratch_dir()), p), "w");
    fputs("layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7\n1,1,2,3,4,5,6,7\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv %s", bin, p);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 1 && strstr(out, "a.csv") && strstr(out, "two.csv") && strchr(out, '\n') == strrchr(out, '\n'),
          "mismatch: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv tests/data/compare/missing.csv", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 1 && strstr(out, "missing.csv"), "missing file: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv tests/data/compare/b.csv --top 0", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2 && strstr(out, "--top"), "bad --top: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2, "one matrix: rc %d", rc);
    snprintf(cmd, sizeof cmd, "%s compare tests/data/compare/a.csv tests/data/compare/b.csv -o %s/x.png", bin,
             scratch_dir());
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2 && strstr(out, "x.png"), "bad -o: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s compare --help", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 0 && strstr(out, "tau-b"), "--help");
}

int main(void) {
    test_reference();
    test_hand();
    test_write();
    test_cli();
    return TEST_END();
}

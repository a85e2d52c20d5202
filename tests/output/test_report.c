/*
 * test_report.c -- lm_report_write: the document's parts (one SVG per matrix
 * with layers x 7 cells coloured by the plots' scale, metadata keys, values,
 * the compare table, the recipe, escaping, no external URL), errors (missing
 * input or recipe, bad extension, unwritable output: nothing left behind),
 * fault injection, and the `report` command. Rendering in Chromium is
 * tests/output/report_test.sh (make test-report).
 */
#include "test.h"
#include "fault.h"

#include "base/base.h"
#include "output/scale.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *spath(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 1024, "%s/%s", scratch_dir(), name);
    return b;
}

static const char *write_text(const char *name, const char *text) {
    const char *p = spath(name);
    FILE *f = fopen(p, "wb");
    if (!f) exit(2);
    fputs(text, f);
    fclose(f);
    return p;
}

/* Whole file, lm_malloc'd (NULL if missing). */
static char *slurp(const char *p) {
    char *t = NULL;
    size_t n;
    lm_err err;
    return lm_file_read_all(p, &t, &n, &err) ? NULL : t;
}

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static int temp_files(void) {
    DIR *d = opendir(scratch_dir());
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static const char *meta_json =
    "{\"model\": \"m<1>\", \"method\": \"grad-weight\", \"norm\": \"none\", \"note\": \"a & b\",\n"
    " \"meta\": {\"tokens\": 2048, \"data\": \"calib.txt\", \"opts\": {\"seq_len\": 256}},\n"
    " \"modules\": [\"attn.q\",\"attn.k\",\"attn.v\",\"attn.o\",\"mlp.up\",\"mlp.down\",\"mlp.gate\"], \"layers\": 4,\n"
    " \"values\": [[1,2,3,4,5,6,null],[7,8,9,10,11,12,13],[3,1,4,1,5,9,2],[6,5,3,5,8,9,7]]}\n";

static void test_document(void) {
    const char *mj = write_text("meta.json", meta_json);
    const char *recipe = write_text("recipe.txt", "blk.0.attn_q.weight=q6_k <b>\n");
    const char *ins[] = {mj, "tests/data/compare/a.csv", "tests/data/compare/c.json"};
    const char *out = spath("r.html");
    lm_err err = {0};
    CHECK_OK(lm_report_write(ins, 3, recipe, 5, out, &err), &err);
    char *h = slurp(out);
    CHECK(h != NULL, "report written");
    if (!h) return;
    CHECK(!strncmp(h, "<!DOCTYPE html>", 15), "doctype");
    CHECK(count(h, "<svg class=\"heatmap\"") == 3 && count(h, "</svg>") == 3, "3 figures");
    CHECK(count(h, "class=\"cell\"") == 3 * 28, "cells: %d", count(h, "class=\"cell\""));
    CHECK(!strstr(h, "http://") && !strstr(h, "https://") && !strstr(h, "url("), "no external URL");
    CHECK(strstr(h, "<th>tokens</th><td>2048</td>") && strstr(h, "<th>data</th><td>calib.txt</td>") &&
              strstr(h, "<th>opts</th><td>{&quot;seq_len&quot;:256}</td>"),
          "meta keys");
    CHECK(strstr(h, "m&lt;1&gt;") && strstr(h, "a &amp; b") && !strstr(h, "m<1>"), "escaped");
    CHECK(strstr(h, "q6_k &lt;b&gt;"), "recipe, escaped");
    CHECK(strstr(h, "layer 0 mlp.gate: NaN") && strstr(h, "fill=\"#d0d0d0\""), "NaN cell grey");
    /* the scale of the first figure: the median of its 27 values is 5 -> the
     * centre colour (lm_colormap(0)) */
    double rgb[3];
    lm_colormap(0, rgb);
    char white[16];
    snprintf(white, sizeof white, "#%02x%02x%02x", (int)lround(rgb[0] * 255), (int)lround(rgb[1] * 255),
             (int)lround(rgb[2] * 255));
    char want[128];
    snprintf(want, sizeof want, "fill=\"%s\"><title>layer 0 mlp.up: 5</title>", white);
    CHECK(strstr(h, want), "median cell at the centre colour %s", white);
    /* compare rows: different layer counts for (meta, a) is 4 vs 4 -> computed;
     * a vs c as in test_compare with k = 5: spearman 0.04899 */
    CHECK(strstr(h, "0.04899") && strstr(h, "(k=5)"), "compare table");
    lm_free(h);

    /* how much data is enough: samples, split-half and the standard errors beside the values */
    const char *sej = write_text(
        "se.json", "{\"method\": \"fisher\", \"layers\": 1, \"values\": [[1,2,4,8,16,32,64]],\n"
                   " \"se\": [[0.5,0.5,0.5,0.5,0.5,0.5,0.5]], \"split_half\": 0.875, \"samples\": 12}\n");
    const char *sein[] = {sej};
    CHECK_OK(lm_report_write(sein, 1, NULL, 10, out, &err), &err);
    h = slurp(out);
    CHECK(h && strstr(h, "<th>samples</th><td>12</td>") && strstr(h, "0.8750 (Spearman, odd vs even samples)") &&
              strstr(h, "largest 50% of |cell|") && strstr(h, "1 &plusmn; 0.5"),
          "stability in the report");
    lm_free(h);

    /* a matrix of NaN only and a 1-matrix report */
    const char *nanj = write_text("nan.csv", "layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,,,,,,,\n");
    const char *one[] = {nanj};
    CHECK_OK(lm_report_write(one, 1, NULL, 10, out, &err), &err);
    h = slurp(out);
    CHECK(h && count(h, "class=\"cell\"") == 7 && strstr(h, "nothing to compare") && !strstr(h, "id=\"recipe\""),
          "one all-NaN matrix");
    lm_free(h);
}

static void test_errors(void) {
    lm_err err = {0};
    const char *out = spath("keep.html");
    write_text("keep.html", "old");
    const char *missing[] = {"tests/data/compare/a.csv", "tests/data/compare/nope.json"};
    CHECK(lm_report_write(missing, 2, NULL, 10, out, &err) == LM_EIO && strstr(err.msg, "nope.json"), "missing: %s",
          err.msg);
    const char *ok[] = {"tests/data/compare/a.csv"};
    CHECK(lm_report_write(ok, 1, spath("no-recipe.txt"), 10, out, &err) == LM_EIO && strstr(err.msg, "no-recipe"),
          "missing recipe: %s", err.msg);
    const char *txt[] = {"tests/data/compare/ref.txt"};
    CHECK(lm_report_write(txt, 1, NULL, 10, out, &err) == LM_EARG && strstr(err.msg, "ref.txt"), "extension");
    const char *bad = write_text("bad.json", "{\"model\": 1");
    const char *badv[] = {bad};
    CHECK(lm_report_write(badv, 1, NULL, 10, out, &err) == LM_ECORRUPT && strstr(err.msg, "bad.json"),
          "corrupt json: %s", err.msg);
    CHECK(lm_report_write(ok, 1, NULL, 0, out, &err) == LM_EARG, "k 0");
    char *h = slurp(out);
    CHECK(h && !strcmp(h, "old"), "failed runs leave the old file");
    lm_free(h);
    CHECK(lm_report_write(ok, 1, NULL, 10, "/nonexistent-dir/r.html", &err) == LM_EIO, "unwritable");
    CHECK(temp_files() == 0, "no temp file left");
    /* fault injection over the whole call. CSV inputs only: lm_matrix_read_json
     * (matrix.c) reports a failed allocation inside cJSON as "not valid JSON"
     * (LM_ECORRUPT) once lm_json_* has routed cJSON through lm_malloc. */
    char recipe[1024], fout[1024];
    snprintf(recipe, sizeof recipe, "%s", spath("recipe.txt"));
    snprintf(fout, sizeof fout, "%s", spath("f.html"));
    const char *ins[] = {"tests/data/compare/b.csv", "tests/data/compare/a.csv"};
    for (long nth = 1;; nth++) {
        lm_fault_arm(nth);
        int rc = lm_report_write(ins, 2, recipe, 10, fout, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        if (!hits) {
            CHECK(rc == LM_OK, "no fault: %d %s", rc, err.msg);
            break;
        }
        CHECK(rc == LM_ENOMEM, "fault %ld: rc %d (%s)", nth, rc, err.msg);
    }
    CHECK(temp_files() == 0, "no temp file after faults");
}

static void test_cli(void) {
    const char *bin = getenv("LM_BIN");
    if (!bin || !*bin) bin = "build/layermap";
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof cmd, "%s report tests/data/compare/a.csv tests/data/compare/b.csv -o %s", bin,
             spath("cli.html"));
    int rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 0 && strstr(out, "wrote"), "report: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s report tests/data/compare/a.csv -o %s", bin, spath("x.png"));
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2 && strstr(out, "x.png"), "bad -o: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s report tests/data/compare/a.csv", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2 && strstr(out, "-o"), "no -o: rc %d %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s report tests/data/compare/zz.csv -o %s", bin, spath("z.html"));
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 1 && strstr(out, "zz.csv") && strchr(out, '\n') == strrchr(out, '\n'), "missing: rc %d %s", rc,
          out);
    snprintf(cmd, sizeof cmd, "%s report tests/data/compare/a.csv --top x -o %s", bin, spath("z.html"));
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 2, "bad --top: rc %d", rc);
    snprintf(cmd, sizeof cmd, "%s report --help", bin);
    rc = test_sh(out, sizeof out, cmd);
    CHECK(rc == 0 && strstr(out, "offline"), "--help");
}

int main(void) {
    test_document();
    test_errors();
    test_cli();
    return TEST_END();
}

/*
 * test_matrix.c -- lm_matrix: cells, normalisation, CSV and JSON round trips,
 * strict readers, atomic writes, the terminal heatmap, the colour scale, and
 * fault injection over the readers and writers.
 */
#include "test.h"
#include "fault.h"

#include "output/scale.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* scratch_dir()/name */
static const char *spath(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 1024, "%s/%s", scratch_dir(), name);
    return b;
}

/* Write text to a scratch file and return its path. */
static const char *write_text(const char *name, const char *text) {
    const char *p = spath(name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    return p;
}

/* Number of files in the scratch directory whose name contains ".tmp." */
static int temp_files(void) {
    DIR *d = opendir(scratch_dir());
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

/* 1 when p exists. */
static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Same double, bit for bit where it matters: NaN == NaN, -0 != +0. */
static int same(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

/* Every value and every text field equal. */
static int same_matrix(const lm_matrix *a, const lm_matrix *b, int meta) {
    if (a->n_layer != b->n_layer) return 0;
    for (size_t k = 0; k < (size_t)a->n_layer * LM_N_MODULES; k++)
        if (!same(a->v[k], b->v[k])) return 0;
    if (!meta) return 1;
    if (strcmp(a->model, b->model) || strcmp(a->method, b->method) || strcmp(a->norm, b->norm) ||
        strcmp(a->note, b->note))
        return 0;
    if (!a->layer_extra != !b->layer_extra) return 0;
    if (a->layer_extra) {
        if (strcmp(a->layer_extra_name, b->layer_extra_name)) return 0;
        for (int l = 0; l < a->n_layer; l++)
            if (!same(a->layer_extra[l], b->layer_extra[l])) return 0;
    }
    return 1;
}

/* A matrix full of awkward doubles: thirds, tiny, huge, denormal, -0, NaN, inf. */
static lm_matrix *awkward(int n) {
    lm_matrix *m = lm_matrix_new(n);
    for (int l = 0; l < n; l++)
        for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, l, c, (l * 7 + c + 1) / 3.0 * pow(10, (l % 5) - 2));
    if (n >= 2) {
        lm_matrix_set(m, 0, 0, 0.1);
        lm_matrix_set(m, 0, 1, -2.5e-300);
        lm_matrix_set(m, 0, 2, 1.7976931348623157e308);
        lm_matrix_set(m, 0, 3, 4.9406564584124654e-324);
        lm_matrix_set(m, 0, 4, -0.0);
        lm_matrix_set(m, 0, 5, NAN);
        lm_matrix_set(m, 0, 6, 1.0 / 3.0);
        lm_matrix_set(m, 1, 0, INFINITY);
        lm_matrix_set(m, 1, 1, -INFINITY);
        lm_matrix_set(m, 1, 2, (double)0.1f);
    }
    return m;
}

/* new/get/set/free and the normalisation names. */
static void test_cells(void) {
    lm_matrix *m = lm_matrix_new(3);
    CHECK(m && m->n_layer == 3, "new");
    CHECK(!strcmp(m->norm, "none") && !m->layer_extra, "defaults");
    CHECK(lm_matrix_get(m, 2, 6) == 0, "zeroed");
    lm_matrix_set(m, 2, 6, 4.5);
    CHECK(lm_matrix_get(m, 2, 6) == 4.5, "set/get");
    CHECK(m->v[2 * LM_N_MODULES + 6] == 4.5, "row-major layout");
    CHECK(isnan(lm_matrix_get(m, 3, 0)) && isnan(lm_matrix_get(m, 0, 7)) && isnan(lm_matrix_get(m, -1, 0)),
          "outside is NaN");
    lm_matrix_set(m, 5, 0, 1); /* ignored, no crash */
    lm_matrix_free(m);
    lm_matrix_free(NULL);
    CHECK(lm_matrix_new(-1) == NULL, "negative size");

    lm_norm n;
    CHECK(lm_norm_parse("module", &n) == LM_OK && n == LM_NORM_MODULE, "parse module");
    CHECK(lm_norm_parse("Layer", &n) == LM_EARG, "parse is exact");
    CHECK(lm_norm_parse("", &n) == LM_EARG, "parse empty");
    for (int i = 0; i < 4; i++) {
        CHECK(lm_norm_parse(lm_norm_name((lm_norm)i), &n) == LM_OK && (int)n == i, "name/parse round trip %d", i);
    }
    CHECK(!strcmp(lm_norm_name(LM_NORM_GLOBAL), "global"), "name");
}

/* Sum of |v| over the finite cells of row r. */
static double row_abs(const lm_matrix *m, int r) {
    double s = 0;
    for (int c = 0; c < LM_N_MODULES; c++)
        if (isfinite(lm_matrix_get(m, r, c))) s += fabs(lm_matrix_get(m, r, c));
    return s;
}
/* Same for column c. */
static double col_abs(const lm_matrix *m, int c) {
    double s = 0;
    for (int r = 0; r < m->n_layer; r++)
        if (isfinite(lm_matrix_get(m, r, c))) s += fabs(lm_matrix_get(m, r, c));
    return s;
}

/* 4 x 7 with both signs, a zero row and one NaN. */
static lm_matrix *signed_matrix(void) {
    lm_matrix *m = lm_matrix_new(4);
    for (int l = 0; l < 4; l++)
        for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, l, c, ((l + c) % 3 - 1) * (1.0 + l + 0.5 * c));
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 2, c, 0); /* a zero row */
    lm_matrix_set(m, 1, 3, NAN);
    return m;
}

/* layer/module/global: |sums| are 1, signs kept, NaN ignored, zeros stay. */
static void test_normalize(void) {
    lm_err err;
    lm_matrix *m = signed_matrix(), *orig = signed_matrix();
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_LAYER, &err), &err);
    CHECK(!strcmp(m->norm, "layer"), "norm recorded: %s", m->norm);
    for (int l = 0; l < 4; l++) {
        if (l == 2)
            CHECK(row_abs(m, l) == 0, "zero row stays zero");
        else
            CHECK_CLOSE(row_abs(m, l), 1, 1e-12, 0, "layer row |sum|");
    }
    CHECK(isnan(lm_matrix_get(m, 1, 3)), "NaN stays NaN");
    int signs_kept = 1;
    for (int l = 0; l < 4; l++)
        for (int c = 0; c < LM_N_MODULES; c++) {
            double a = lm_matrix_get(orig, l, c), b = lm_matrix_get(m, l, c);
            if (!isnan(a) && ((a > 0) != (b > 0) || (a < 0) != (b < 0))) signs_kept = 0;
        }
    CHECK(signs_kept, "signs kept");
    /* row 1: |sum| of finite cells of the original, NaN ignored */
    CHECK_CLOSE(lm_matrix_get(m, 1, 0), lm_matrix_get(orig, 1, 0) / row_abs(orig, 1), 1e-15, 1e-12, "row 1 value");
    lm_matrix_free(m);

    m = signed_matrix();
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_MODULE, &err), &err);
    for (int c = 0; c < LM_N_MODULES; c++) CHECK_CLOSE(col_abs(m, c), 1, 1e-12, 0, "module column |sum|");
    CHECK(!strcmp(m->norm, "module"), "norm module");
    lm_matrix_free(m);

    m = signed_matrix();
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_GLOBAL, &err), &err);
    double s = 0;
    for (int l = 0; l < 4; l++) s += row_abs(m, l);
    CHECK_CLOSE(s, 1, 1e-12, 0, "global |sum|");
    lm_matrix_free(m);

    m = signed_matrix();
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_NONE, &err), &err);
    CHECK(same_matrix(m, orig, 1), "none changes nothing");
    CHECK(lm_matrix_normalize(m, (lm_norm)9, &err) == LM_EARG, "unknown norm");
    lm_matrix_free(m);

    m = lm_matrix_new(3); /* all zero */
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_GLOBAL, &err), &err);
    CHECK(lm_matrix_get(m, 1, 1) == 0, "zero matrix stays zero");
    lm_matrix_free(m);

    m = lm_matrix_new(2); /* all NaN */
    for (int k = 0; k < 2 * LM_N_MODULES; k++) m->v[k] = NAN;
    CHECK_OK(lm_matrix_normalize(m, LM_NORM_LAYER, &err), &err);
    CHECK(isnan(m->v[3]), "NaN matrix stays NaN");
    lm_matrix_free(m);
    lm_matrix_free(orig);
}

/* Exact round trip, the text itself, tolerated variants, strict errors. */
static void test_csv(void) {
    lm_err err;
    lm_matrix *m = awkward(6), *r = NULL;
    const char *p = spath("a.csv");
    CHECK_OK(lm_matrix_write_csv(m, p, &err), &err);
    CHECK_OK(lm_matrix_read_csv(&r, p, &err), &err);
    CHECK(r && same_matrix(m, r, 0), "csv round trip is exact");
    CHECK(r && !strcmp(r->model, "a") && !strcmp(r->norm, "none"), "csv model is the stem: '%s'", r ? r->model : "");
    lm_matrix_free(r);

    char *text;
    size_t len;
    CHECK_OK(lm_file_read_all(p, &text, &len, &err), &err);
    const char *head = "layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,0.1,-2.5e-300,";
    CHECK(!strncmp(text, head, strlen(head)),
          "header and first values: %.70s", text);
    CHECK(strstr(text, ",-0,,0.333333333333333") != NULL, "-0, NaN as empty, 1/3: %.200s", text);
    CHECK(strstr(text, "\n1,inf,-inf,0.10000000149011612,") != NULL, "inf and float 0.1");
    lm_free(text);
    lm_matrix_free(m);

    /* tolerated: CRLF, BOM, "nan", blanks around numbers, trailing blank lines, no final newline */
    p = write_text("ok.csv", "\xEF\xBB\xBFlayer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\r\n"
                             "0,1,2,3,4,5,6,7\r\n1, 1.5 ,nan,NaN,,-inf,1e-3,0\r\n\r\n");
    CHECK_OK(lm_matrix_read_csv(&r, p, &err), &err);
    CHECK(r && r->n_layer == 2 && lm_matrix_get(r, 0, 6) == 7 && lm_matrix_get(r, 1, 0) == 1.5 &&
              isnan(lm_matrix_get(r, 1, 1)) && isnan(lm_matrix_get(r, 1, 3)) && isinf(lm_matrix_get(r, 1, 4)) &&
              lm_matrix_get(r, 1, 5) == 1e-3,
          "tolerant parse");
    lm_matrix_free(r);
    p = write_text("nofinal.csv", "layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7");
    CHECK_OK(lm_matrix_read_csv(&r, p, &err), &err);
    lm_matrix_free(r);

    /* strict: each must be LM_ECORRUPT naming the file and the line */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"", "empty"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n", "no layers"},
        {"layer,q,k,v,o,up,down,gate\n0,1,2,3,4,5,6,7\n", "line 1"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down\n0,1,2,3,4,5,6\n", "line 1"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7\n1,1,2,3\n", "line 3"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7,8\n", "line 2"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,x,4,5,6,7\n", "line 2: attn.v: 'x'"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7abc\n", "line 2"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n-1,1,2,3,4,5,6,7\n", "expected 0"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n3,1,2,3,4,5,6,7\n2,1,2,3,4,5,6,7\n", "line 3"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n01,1,2,3,4,5,6,7\n", "line 2"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7\n0,1,2,3,4,5,6,7\n", "line 3"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,1,2,3,4,5,6,7\n\n1,1,2,3,4,5,6,7\n",
         "line 3: blank"},
        {"layer,attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,mlp.gate\n0,\"1\",2,3,4,5,6,7\n", "line 2"},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.csv", i);
        p = write_text(name, bad[i].text);
        r = (lm_matrix *)1;
        err.msg[0] = 0;
        int rc = lm_matrix_read_csv(&r, p, &err);
        CHECK(rc == LM_ECORRUPT && r == NULL, "bad csv %d -> %d", i, rc);
        CHECK(strstr(err.msg, name) && strstr(err.msg, bad[i].want), "bad csv %d message: %s", i, err.msg);
    }
    p = spath("missing.csv");
    CHECK(lm_matrix_read_csv(&r, p, &err) == LM_EIO && strstr(err.msg, "missing.csv"), "missing file: %s",
          err.msg);
}

/* Exact round trip with metadata, UTF-8 handling, strict errors. */
static void test_json(void) {
    lm_err err;
    lm_matrix *m = awkward(5), *r = NULL;
    snprintf(m->model, sizeof m->model, "Llama \"3\"\\ü\t");
    snprintf(m->method, sizeof m->method, "diff.rel");
    snprintf(m->norm, sizeof m->norm, "layer");
    snprintf(m->note, sizeof m->note, "line1\nline2 \x01");
    m->layer_extra = lm_malloc(5 * sizeof(double));
    for (int l = 0; l < 5; l++) m->layer_extra[l] = l == 3 ? NAN : 1.0 / (l + 3);
    snprintf(m->layer_extra_name, sizeof m->layer_extra_name, "block_influence");
    const char *p = spath("a.json");
    CHECK_OK(lm_matrix_write_json(m, p, &err), &err);
    CHECK_OK(lm_matrix_read_json(&r, p, &err), &err);
    CHECK(r && same_matrix(m, r, 1), "json round trip is exact (values, metadata, layer_extra)");
    lm_matrix_free(r);
    char *text;
    size_t len;
    CHECK_OK(lm_file_read_all(p, &text, &len, &err), &err);
    CHECK(strstr(text, "\"modules\": [\"attn.q\", \"attn.k\", \"attn.v\", \"attn.o\", \"mlp.up\", \"mlp.down\", "
                       "\"mlp.gate\"]") &&
              strstr(text, "\"layers\": 5") && strstr(text, "null") && strstr(text, "1e999"),
          "json layout: %.400s", text);
    lm_free(text);
    lm_matrix_free(m);

    /* names that are not UTF-8 are written as U+FFFD, so the file stays valid JSON */
    m = lm_matrix_new(1);
    snprintf(m->model, sizeof m->model, "caf\xe9 \xe2\x82\xac");
    CHECK_OK(lm_matrix_write_json(m, p, &err), &err);
    CHECK_OK(lm_matrix_read_json(&r, p, &err), &err);
    CHECK(r && !strcmp(r->model, "caf\xef\xbf\xbd \xe2\x82\xac"), "invalid UTF-8 replaced: %s", r ? r->model : "");
    lm_matrix_free(r);
    lm_matrix_free(m);
    static const struct {
        const char *s;
        int len;
    } u8[] = {{"a", 1}, {"\xc3\xa9", 2}, {"\xe2\x82\xac", 3}, {"\xf0\x9f\x98\x80", 4}, {"\xc0\xaf", 0},
              {"\xed\xa0\x80", 0}, {"\xf4\x90\x80\x80", 0}, {"\xe2\x82", 0}, {"\x80", 0}, {"\xff", 0}};
    for (int i = 0; i < (int)(sizeof u8 / sizeof u8[0]); i++)
        CHECK(lm_utf8_len((const unsigned char *)u8[i].s) == u8[i].len, "utf8 case %d", i);

    /* a minimal hand-written file */
    p = write_text("min.json", "{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, null]]}");
    CHECK_OK(lm_matrix_read_json(&r, p, &err), &err);
    CHECK(r && r->n_layer == 1 && lm_matrix_get(r, 0, 5) == 6 && isnan(lm_matrix_get(r, 0, 6)) &&
              !strcmp(r->norm, "none") && !r->layer_extra,
          "minimal json");
    lm_matrix_free(r);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"layers\": 1,\n\"values\": [[1, 2, 3, 4, 5, 6, 7]\n", "invalid JSON at byte 46 (line 2"},
        {"[1, 2]", "not a JSON object"},
        {"{\"values\": [[1, 2, 3, 4, 5, 6, 7]]}", "layers"},
        {"{\"layers\": 2, \"values\": [[1, 2, 3, 4, 5, 6, 7]]}", "1 rows"},
        {"{\"layers\": 1.5, \"values\": [[1, 2, 3, 4, 5, 6, 7]]}", "integer"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6]]}", "values[0] has 6"},
        {"{\"layers\": 1, \"values\": [[1, 2, \"3\", 4, 5, 6, 7]]}", "values[0][2]"},
        {"{\"layers\": 1, \"values\": [7]}", "values[0] is not an array"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, 7]], \"norm\": \"rows\"}", "norm"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, 7]], \"model\": 3}", "model"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, 7]], \"modules\": [\"q\"]}", "modules"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, 7]], \"layer_extra\": {\"values\": []}}", "layer_extra"},
        {"{\"layers\": 1, \"values\": [[1, 2, 3, 4, 5, 6, 7]]}\n{}", "after the JSON value at byte 49 (line 2"},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.json", i);
        p = write_text(name, bad[i].text);
        r = (lm_matrix *)1;
        err.msg[0] = 0;
        int rc = lm_matrix_read_json(&r, p, &err);
        CHECK(rc == LM_ECORRUPT && r == NULL, "bad json %d -> %d", i, rc);
        CHECK(strstr(err.msg, name) && strstr(err.msg, bad[i].want), "bad json %d message: %s", i, err.msg);
    }
}

/* Failed writes leave no file, no temp file, and the old file intact. */
static void test_atomic(void) {
    lm_err err;
    lm_matrix *m = awkward(100);
    /* a directory that does not exist: LM_EIO, nothing written */
    const char *p = spath("no/such/dir/x.csv");
    CHECK(lm_matrix_write_csv(m, p, &err) == LM_EIO && strstr(err.msg, "x.csv"), "unwritable csv: %s", err.msg);
    CHECK(!file_exists(p), "no file");
    CHECK(lm_matrix_write_json(m, spath("no/x.json"), &err) == LM_EIO, "unwritable json");

    /* the target is a directory: rename fails, the temp file goes away */
    p = spath("isdir.csv");
    mkdir(p, 0755);
    CHECK(lm_matrix_write_csv(m, p, &err) == LM_EIO, "rename over a directory fails");
    CHECK(temp_files() == 0, "no temp file after a failed rename");

    /* a write that fails half-way (file size limit): the old file stays as it was */
    p = write_text("keep.csv", "old contents\n");
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int rc1 = lm_matrix_write_csv(m, p, &err);
        int rc2 = lm_matrix_write_json(m, p, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(rc1 == LM_EIO && rc2 == LM_EIO, "write past the size limit fails: %d %d", rc1, rc2);
        char *text;
        size_t len;
        CHECK_OK(lm_file_read_all(p, &text, &len, &err), &err);
        CHECK(!strcmp(text, "old contents\n"), "existing file untouched: %.40s", text);
        lm_free(text);
        CHECK(temp_files() == 0, "no temp file after a failed write");
    } else {
        printf("note: setrlimit unavailable, half-way failure not tested\n");
    }
    signal(SIGXFSZ, prev);
    lm_matrix_free(m);
}

/* Terminal heatmap, plain and coloured. */
static void test_print(void) {
    lm_matrix *m = awkward(3);
    snprintf(m->model, sizeof m->model, "tiny");
    snprintf(m->method, sizeof m->method, "fisher");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    lm_matrix_print(m, f, 0);
    fclose(f);
    CHECK(strstr(buf, "tiny - fisher\n") && strstr(buf, "layer") && strstr(buf, "mlp.gate"), "plain: %s", buf);
    CHECK(!strchr(buf, '\x1b'), "no escapes without colour");
    CHECK(strstr(buf, "\n    2 ") != NULL, "layer labels");
    CHECK(strstr(buf, "0.333") != NULL, "values shown");
    free(buf);
    f = open_memstream(&buf, &len);
    lm_matrix_print(m, f, 1);
    fclose(f);
    CHECK(strstr(buf, "\x1b[48;2;") && strstr(buf, "\x1b[0m") && strstr(buf, "white ="), "colour: %.200s", buf);
    free(buf);
    lm_matrix_free(m);
}

/* Colormap ends and centre, monotone lightness, scale fitting. */
static void test_scale(void) {
    double rgb[3];
    lm_colormap(-1, rgb);
    CHECK(fabs(rgb[0] * 255 - 0x21) < 1 && fabs(rgb[1] * 255 - 0x66) < 1 && fabs(rgb[2] * 255 - 0xac) < 1,
          "-1 is #2166ac: %g %g %g", rgb[0] * 255, rgb[1] * 255, rgb[2] * 255);
    lm_colormap(0, rgb);
    CHECK(fabs(rgb[0] * 255 - 0xf7) < 1 && fabs(rgb[1] * 255 - 0xf7) < 1 && fabs(rgb[2] * 255 - 0xf7) < 1,
          "0 is #f7f7f7");
    lm_colormap(1, rgb);
    CHECK(fabs(rgb[0] * 255 - 0xe6) < 1 && fabs(rgb[1] * 255 - 0x61) < 1 && fabs(rgb[2] * 255 - 0x01) < 1.5,
          "1 is #e66101: %g %g %g", rgb[0] * 255, rgb[1] * 255, rgb[2] * 255);
    /* lightness falls steadily away from the centre on both sides */
    double prev = 2;
    int mono = 1;
    for (int i = 0; i <= 50; i++) {
        lm_colormap(i / 50.0, rgb);
        double y = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
        if (y > prev + 1e-9) mono = 0;
        prev = y;
    }
    prev = 2;
    for (int i = 0; i <= 50; i++) {
        lm_colormap(-i / 50.0, rgb);
        double y = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
        if (y > prev + 1e-9) mono = 0;
        prev = y;
    }
    CHECK(mono, "lightness monotone on both sides");

    lm_err err;
    lm_matrix *m = lm_matrix_new(1);
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, c); /* 0..6, median 3 */
    lm_matrix_set(m, 0, 6, NAN); /* 0..5, median 2.5 */
    const lm_matrix *one[1] = {m};
    lm_scale s;
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.vmin == 0 && s.vmax == 5 && s.center == 2.5, "fit %g %g %g", s.vmin, s.center, s.vmax);
    CHECK(lm_scale_pos(&s, 0) == -1 && lm_scale_pos(&s, 5) == 1 && lm_scale_pos(&s, 2.5) == 0 &&
              lm_scale_pos(&s, 1.25) == -0.5 && isnan(lm_scale_pos(&s, NAN)) && lm_scale_pos(&s, 99) == 1,
          "positions");
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.has_center = 1;
    o.center = 4; /* asymmetric: 4 units below, 1 above */
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.center == 4 && lm_scale_pos(&s, 0) == -1 && lm_scale_pos(&s, 5) == 1 && lm_scale_pos(&s, 4.5) == 0.5,
          "asymmetric");
    o.center = -10; /* outside the data: the range grows to hold it */
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.vmin == -10 && s.vmax == 5, "range holds the centre");
    o.has_range = 1;
    o.vmin = 0;
    o.vmax = 1;
    CHECK(lm_scale_fit(&s, one, 1, &o, &err) == LM_EARG, "centre outside range");
    o.vmin = 2;
    CHECK(lm_scale_fit(&s, one, 1, &o, &err) == LM_EARG, "vmin >= vmax");
    o.has_center = 0;
    o.vmin = -1;
    o.vmax = 1;
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.center == 1, "median clamped into the range");
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, 2);
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.vmin < 2 && s.vmax > 2 && s.center == 2, "all equal: a range around the value");
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, NAN);
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.vmin < s.center && s.center < s.vmax, "all NaN: some range");
    lm_matrix_free(m);
}

/* The quantity table: every method and diff metric the library writes is in
 * it, signed exactly where its sign means something, with its label. */
static void test_quantities(void) {
    static const char *const signed_names[] = {"grad-weight-signed", "act-grad", "ig", "ablate", "ablate-mean"};
    for (int i = 0; i < LM_METHOD_COUNT; i++) {
        const lm_quantity *q = lm_quantity_find(lm_method_names[i]);
        int want = 0;
        for (int k = 0; k < 5; k++) want |= !strcmp(lm_method_names[i], signed_names[k]);
        CHECK(q && q->is_signed == want && q->label && q->label[0], "method %s in the table, signed %d",
              lm_method_names[i], want);
    }
    for (int i = 0; i < LM_DIFF_COUNT; i++) {
        char name[64];
        snprintf(name, sizeof name, "diff.%s", lm_diff_metric_names[i]);
        const lm_quantity *q = lm_quantity_find(name);
        CHECK(q && !q->is_signed, "%s in the table, a magnitude", name);
    }
    CHECK(lm_quantity_find("ablate per param") == lm_quantity_find("ablate"), "per param keeps the quantity");
    CHECK(!lm_quantity_find("ablatex") && !lm_quantity_find("") && !lm_quantity_find(NULL), "unknown names");

    lm_matrix *m = lm_matrix_new(2);
    char buf[256];
    static const struct { const char *method, *norm, *label; } cases[] = {
        {"ablate", "none", "loss change, nats"},
        {"grad-weight", "none", "|W\xc2\xb7" "dL/dW|, nats"},
        {"grad-weight", "layer", "|W\xc2\xb7" "dL/dW|, share of layer"},
        {"ablate", "module", "loss change, share of module"},
        {"diff.rel", "none", "||dW||/||W||"},
        {"diff.density", "none", "fraction of entries changed"},
        {"grad-weight per param", "none", "|W\xc2\xb7" "dL/dW|, nats per weight"},
        {"fisher per param", "global", "\xce\xa3 (dL/dW)\xc2\xb2 per weight, share of total"},
        {"my-metric", "none", "my-metric"},
        {"", "none", "value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(m->method, sizeof m->method, "%s", cases[i].method);
        snprintf(m->norm, sizeof m->norm, "%s", cases[i].norm);
        lm_quantity_label(buf, sizeof buf, m);
        CHECK(!strcmp(buf, cases[i].label), "label of %s/%s: '%s', want '%s'", cases[i].method, cases[i].norm, buf,
              cases[i].label);
    }
    /* signedness: the table first, negative values for unknown names */
    snprintf(m->method, sizeof m->method, "ablate");
    CHECK(lm_matrix_is_signed(m), "ablate of zeros is signed");
    snprintf(m->method, sizeof m->method, "custom");
    CHECK(!lm_matrix_is_signed(m), "unknown, no negative: magnitude");
    lm_matrix_set(m, 1, 3, -1e-9);
    CHECK(lm_matrix_is_signed(m), "unknown with a negative: signed");
    snprintf(m->method, sizeof m->method, "diff.cosine");
    CHECK(!lm_matrix_is_signed(m), "a magnitude in the table stays one with a negative value");
    lm_matrix *n = lm_matrix_new(2);
    snprintf(m->method, sizeof m->method, "ablate");
    snprintf(n->method, sizeof n->method, "ablate");
    snprintf(n->model, sizeof n->model, "other");
    snprintf(m->norm, sizeof m->norm, "none");
    CHECK(lm_same_quantity(m, n), "same method, other model: same quantity");
    snprintf(n->norm, sizeof n->norm, "layer");
    CHECK(!lm_same_quantity(m, n), "other normalisation: other quantity");
    lm_matrix_free(m);
    lm_matrix_free(n);
}

/* Signed quantities: centre 0 and range [-M, M]; the data's range kept; an
 * explicit centre or range wins. */
static void test_scale_signed(void) {
    lm_err err;
    lm_matrix *m = lm_matrix_new(1);
    snprintf(m->method, sizeof m->method, "ablate");
    static const double v[7] = {-0.895, 0, 3, 35, 2021, NAN, 7};
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, v[c]);
    const lm_matrix *one[1] = {m};
    lm_scale s;
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.symmetric && s.center == 0 && s.vmin == -2021 && s.vmax == 2021 && s.dmin == -0.895 && s.dmax == 2021,
          "ablate: [-2021, 2021] around 0, data %g..%g", s.dmin, s.dmax);
    CHECK(lm_scale_pos(&s, 1000) == -lm_scale_pos(&s, -1000) && lm_scale_pos(&s, 0) == 0, "mirror positions");
    double a[3], b[3];
    lm_colormap(lm_scale_pos(&s, -0.895), a);
    CHECK(a[0] > 0.95 && a[2] >= a[0], "-0.895 is nearly white (%g %g %g)", a[0], a[1], a[2]);
    lm_colormap(lm_scale_pos(&s, 500), a);
    lm_colormap(lm_scale_pos(&s, -500), b);
    CHECK(a[0] > a[2] && b[2] > b[0], "positive orange, negative blue");
    /* all negative: still [-M, M] */
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, -1 - c);
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.symmetric && s.vmin == -7 && s.vmax == 7 && s.center == 0, "all negative: [-7, 7]");
    /* all zero: a unit range around 0 */
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, 0);
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(s.symmetric && s.vmin == -1 && s.vmax == 1, "all zero: [-1, 1]");
    /* an explicit centre: the old two-slope scale around it */
    for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, 0, c, c);
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.has_center = 1;
    o.center = 2;
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(!s.symmetric && s.center == 2 && s.vmin == 0 && s.vmax == 6, "--center wins");
    /* an explicit range: centre 0 inside it, clamped outside */
    o.has_center = 0;
    o.has_range = 1;
    o.vmin = -1;
    o.vmax = 10;
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.center == 0 && s.vmin == -1 && s.vmax == 10 && !s.symmetric, "--vmin/--vmax win, centre 0");
    o.vmin = 1;
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.center == 1, "centre 0 clamped into [1, 10]");
    o.vmin = -10;
    CHECK_OK(lm_scale_fit(&s, one, 1, &o, &err), &err);
    CHECK(s.center == 0 && s.symmetric, "a given symmetric range keeps the min/max marks");
    /* a magnitude with the same values keeps the median */
    snprintf(m->method, sizeof m->method, "act-sq");
    CHECK_OK(lm_scale_fit(&s, one, 1, NULL, &err), &err);
    CHECK(!s.symmetric && s.center == 3 && s.vmin == 0 && s.vmax == 6, "magnitude: median 3");
    /* a set with one signed matrix is signed */
    lm_matrix *g = lm_matrix_new(1);
    snprintf(g->method, sizeof g->method, "ig");
    lm_matrix_set(g, 0, 0, -12);
    const lm_matrix *two[2] = {m, g};
    CHECK_OK(lm_scale_fit(&s, two, 2, NULL, &err), &err);
    CHECK(s.symmetric && s.vmax == 12, "mixed set: signed");
    /* a plain vector: median */
    static const double bi[4] = {0.1, 0.2, 0.3, 0.9};
    CHECK_OK(lm_scale_fit_values(&s, bi, 4, NULL, &err), &err);
    CHECK(fabs(s.center - 0.25) < 1e-15 && s.vmin == 0.1 && s.vmax == 0.9, "vector: median");
    /* the terminal legend of a signed matrix says white = 0 */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    lm_matrix_print(g, f, 1);
    fclose(f);
    CHECK(strstr(buf, "white = 0)") != NULL, "terminal: %s", buf);
    free(buf);
    lm_matrix_free(m);
    lm_matrix_free(g);
}

static lm_matrix *fault_m;
/* Write fault_m as JSON / CSV to the path ctx (fault-injection runs): no file
 * after a failure. */
static int fw_json(void *ctx, lm_err *e, const char **why) {
    unlink(ctx);
    int rc = lm_matrix_write_json(fault_m, ctx, e);
    if (rc != LM_OK && file_exists(ctx)) *why = "a file after a failure";
    return rc;
}
static int fw_csv(void *ctx, lm_err *e, const char **why) {
    unlink(ctx);
    int rc = lm_matrix_write_csv(fault_m, ctx, e);
    if (rc != LM_OK && file_exists(ctx)) *why = "a file after a failure";
    return rc;
}
/* Read the prepared JSON / CSV file ctx (fault-injection runs). */
static int fr_json(void *ctx, lm_err *e, const char **why) {
    lm_matrix *r = NULL;
    int rc = lm_matrix_read_json(&r, ctx, e);
    if (rc != LM_OK && r) *why = "a matrix after a failure";
    lm_matrix_free(r);
    return rc;
}
static int fr_csv(void *ctx, lm_err *e, const char **why) {
    lm_matrix *r = NULL;
    int rc = lm_matrix_read_csv(&r, ctx, e);
    if (rc != LM_OK && r) *why = "a matrix after a failure";
    lm_matrix_free(r);
    return rc;
}

/* Fault injection over every reader and writer: each failing run says
 * LM_ENOMEM and leaves no file and no temp file behind. */
static void test_faults(void) {
    lm_err err;
    char fj[1024], fc[1024], ij[1024], ic[1024];
    snprintf(fj, sizeof fj, "%s", spath("f.json"));
    snprintf(fc, sizeof fc, "%s", spath("f.csv"));
    snprintf(ij, sizeof ij, "%s", spath("fin.json"));
    snprintf(ic, sizeof ic, "%s", spath("fin.csv"));
    fault_m = awkward(200);
    fault_m->layer_extra = lm_calloc(200, sizeof(double));
    CHECK_OK(lm_matrix_write_json(fault_m, ij, &err), &err);
    CHECK_OK(lm_matrix_write_csv(fault_m, ic, &err), &err);
    fault_sweep("write_json", fw_json, fj, 1000);
    CHECK(temp_files() == 0, "write_json: no temp files");
    fault_sweep("write_csv", fw_csv, fc, 1000);
    CHECK(temp_files() == 0, "write_csv: no temp files");
    /* readers: cJSON's own allocations are not ours to fail, the rest are */
    fault_sweep("read_json", fr_json, ij, 5000); /* cJSON allocates per value */
    fault_sweep("read_csv", fr_csv, ic, 1000);
    CHECK(temp_files() == 0, "readers: no temp files");
    lm_matrix_free(fault_m);
}

/* Every group in turn. */
/* --layers: selected rows keep their layer numbers through CSV and JSON;
 * run metadata ("meta") round-trips through JSON; a file without either reads
 * as before. */
static void test_layer_selection(void) {
    lm_err err;
    lm_matrix *m = lm_matrix_new(6), *r = NULL;
    for (int l = 0; l < 6; l++)
        for (int k = 0; k < LM_N_MODULES; k++) lm_matrix_set(m, l, k, 10 * l + k);
    m->layer_extra = lm_malloc(6 * sizeof(double));
    for (int l = 0; l < 6; l++) m->layer_extra[l] = 100 + l;
    uint8_t keep[7] = {0, 1, 0, 1, 0, 1, 1}; /* layer 6 does not exist: ignored */
    CHECK_OK(lm_matrix_select_layers(m, keep, 7, &err), &err);
    CHECK(m->n_layer == 3 && lm_matrix_layer(m, 0) == 1 && lm_matrix_layer(m, 2) == 5 &&
              lm_matrix_get(m, 1, 2) == 32 && m->layer_extra[2] == 105,
          "select layers 1,3,5: %d rows", m->n_layer);
    uint8_t none[2] = {0, 0};
    CHECK(lm_matrix_select_layers(m, none, 2, &err) == LM_EARG && m->n_layer == 3, "empty selection refused");
    CHECK_OK(lm_matrix_set_meta(m, "{\"version\": \"x\", \"threads\": 2}", &err), &err);
    const char *p = spath("sel.csv");
    CHECK_OK(lm_matrix_write_csv(m, p, &err), &err);
    char *text;
    size_t len;
    CHECK_OK(lm_file_read_all(p, &text, &len, &err), &err);
    CHECK(strstr(text, "\n1,10,11,") && strstr(text, "\n3,30,") && strstr(text, "\n5,50,"), "csv rows: %s", text);
    lm_free(text);
    CHECK_OK(lm_matrix_read_csv(&r, p, &err), &err);
    CHECK(r && r->n_layer == 3 && r->layer_index && lm_matrix_layer(r, 1) == 3 && lm_matrix_get(r, 2, 6) == 56,
          "csv keeps the layer numbers");
    lm_matrix_free(r);
    p = spath("sel.json");
    CHECK_OK(lm_matrix_write_json(m, p, &err), &err);
    CHECK_OK(lm_matrix_read_json(&r, p, &err), &err);
    CHECK(r && r->n_layer == 3 && r->layer_index && lm_matrix_layer(r, 2) == 5 && r->layer_extra &&
              r->layer_extra[1] == 103 && r->meta && strstr(r->meta, "\"threads\":2"),
          "json keeps layer numbers and meta: %s", r && r->meta ? r->meta : "(no meta)");
    lm_matrix_free(r);
    lm_matrix_free(m);
    static const char *bad[] = {
        "{\"layers\": 2, \"values\": [[1,2,3,4,5,6,7],[1,2,3,4,5,6,7]], \"layer_index\": [3, 3]}",
        "{\"layers\": 2, \"values\": [[1,2,3,4,5,6,7],[1,2,3,4,5,6,7]], \"layer_index\": [1]}",
        "{\"layers\": 1, \"values\": [[1,2,3,4,5,6,7]], \"layer_index\": [-1]}",
        "{\"layers\": 1, \"values\": [[1,2,3,4,5,6,7]], \"meta\": \"text\"}",
    };
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "badsel%d.json", i);
        p = write_text(name, bad[i]);
        CHECK(lm_matrix_read_json(&r, p, &err) == LM_ECORRUPT && strstr(err.msg, name), "bad json %d: %s", i,
              err.msg);
    }
}

int main(void) {
    test_layer_selection();
    test_cells();
    test_normalize();
    test_csv();
    test_json();
    test_atomic();
    test_print();
    test_scale();
    test_quantities();
    test_scale_signed();
    test_faults();
    return TEST_END();
}

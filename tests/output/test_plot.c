/*
 * test_plot.c -- heatmap figures: PNG pixels read back with cairo (colours,
 * layer order, shared grid scale), SVG/PDF magic, odd matrices, errors,
 * atomic writes, fault injection, and the `layermap plot` command.
 */
#include "test.h"

#include "output/scale.h"

#include <cairo.h>
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

/* 1 when p exists. */
static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
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

/* First n bytes of a file equal magic. */
static int starts_with(const char *path, const char *magic) {
    char buf[64] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, strlen(magic), f);
    fclose(f);
    return n == strlen(magic) && !memcmp(buf, magic, n);
}

/* ---- PNG pixels --------------------------------------------------------- */

typedef struct image {
    cairo_surface_t *s;
    int w, h, stride;
    const unsigned char *data;
} image;

/* Load a PNG; 0 on success. */
static int load_png(image *im, const char *path) {
    im->s = cairo_image_surface_create_from_png(path);
    if (cairo_surface_status(im->s) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(im->s);
        im->s = NULL;
        return -1;
    }
    cairo_surface_flush(im->s);
    im->w = cairo_image_surface_get_width(im->s);
    im->h = cairo_image_surface_get_height(im->s);
    im->stride = cairo_image_surface_get_stride(im->s);
    im->data = cairo_image_surface_get_data(im->s);
    return 0;
}

/* RGB of pixel (x, y), 0..255 (the figures are opaque: no premultiplication). */
static void pixel(const image *im, int x, int y, int rgb[3]) {
    uint32_t p;
    memcpy(&p, im->data + (size_t)y * (size_t)im->stride + 4 * (size_t)x, 4);
    rgb[0] = (p >> 16) & 255;
    rgb[1] = (p >> 8) & 255;
    rgb[2] = p & 255;
}

enum { C_OTHER, C_BLUE, C_ORANGE, C_CENTRE };

/* Classify a colour: full blue (#2166ac), full orange (#e66101), the centre's
 * near-white (#f7f7f7, not the page's pure white), or anything else. */
static int classify(const int c[3]) {
    if (abs(c[0] - 0x21) < 12 && abs(c[1] - 0x66) < 12 && abs(c[2] - 0xac) < 12) return C_BLUE;
    if (abs(c[0] - 0xe6) < 12 && abs(c[1] - 0x61) < 12 && c[2] < 24) return C_ORANGE;
    if (abs(c[0] - 0xf7) <= 3 && abs(c[1] - 0xf7) <= 3 && abs(c[2] - 0xf7) <= 3) return C_CENTRE;
    return C_OTHER;
}

/* Rows where more than a quarter of the width has class cls (a heatmap row
 * band, not the narrow colour bar): first and last such row, -1 if none. */
static void band(const image *im, int cls, int *first, int *last) {
    *first = *last = -1;
    for (int y = 0; y < im->h; y++) {
        int n = 0, rgb[3];
        for (int x = 0; x < im->w; x++) {
            pixel(im, x, y, rgb);
            n += classify(rgb) == cls;
        }
        if (n > im->w / 4) {
            if (*first < 0) *first = y;
            *last = y;
        }
    }
}

/* Mean x of the pixels of class cls. */
static double mean_x(const image *im, int cls) {
    double sx = 0, n = 0;
    int rgb[3];
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            pixel(im, x, y, rgb);
            if (classify(rgb) == cls) {
                sx += x;
                n++;
            }
        }
    return n ? sx / n : -1;
}

/* n layers of v everywhere, with a model and method name. */
static lm_matrix *filled(int n, double v, const char *model, const char *method) {
    lm_matrix *m = lm_matrix_new(n);
    for (size_t k = 0; k < (size_t)n * LM_N_MODULES; k++) m->v[k] = v;
    snprintf(m->model, sizeof m->model, "%s", model);
    snprintf(m->method, sizeof m->method, "%s", method);
    return m;
}

/* Layer 0 all at the maximum, layer 1 at the median, layer 2 at the minimum:
 * orange band on top, near-white in the middle, blue at the bottom. */
static void test_png_colours(void) {
    lm_err err;
    lm_matrix *m = filled(3, 0, "toy", "diff.rel");
    for (int c = 0; c < LM_N_MODULES; c++) {
        lm_matrix_set(m, 0, c, 10);
        lm_matrix_set(m, 1, c, 4);
        lm_matrix_set(m, 2, c, -1);
    }
    const lm_matrix *one[1] = {m};
    const char *p = spath("rows.png");
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    CHECK(starts_with(p, "\x89PNG\r\n\x1a\n"), "png magic");
    image im;
    CHECK(load_png(&im, p) == 0, "png loads");
    if (!im.s) return;
    CHECK(im.w >= 300 && im.w <= 3000 && im.h >= 200 && im.h <= 3000, "sane size %dx%d", im.w, im.h);
    int o0, o1, c0, c1, b0, b1;
    band(&im, C_ORANGE, &o0, &o1);
    band(&im, C_CENTRE, &c0, &c1);
    band(&im, C_BLUE, &b0, &b1);
    CHECK(o0 >= 0 && c0 >= 0 && b0 >= 0, "max orange, centre near-white, min blue: %d %d %d", o0, c0, b0);
    CHECK(o1 < c0 && c1 < b0, "layer 0 at the top: orange %d-%d, white %d-%d, blue %d-%d", o0, o1, c0, c1, b0, b1);
    /* cells roughly the same height; at 300 dpi a 20 pt cell is ~80 px */
    CHECK(o1 - o0 > 30 && b1 - b0 > 30 && abs((o1 - o0) - (b1 - b0)) < 6, "cell heights %d %d", o1 - o0, b1 - b0);
    cairo_surface_destroy(im.s);

    /* a user range: values beyond it are clipped to the ends */
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.has_range = 1;
    o.vmin = 0;
    o.vmax = 8;
    o.has_center = 1;
    o.center = 4;
    CHECK_OK(lm_plot_write(one, 1, &o, p, &err), &err);
    CHECK(load_png(&im, p) == 0, "png loads");
    band(&im, C_ORANGE, &o0, &o1);
    band(&im, C_CENTRE, &c0, &c1);
    band(&im, C_BLUE, &b0, &b1);
    CHECK(o0 >= 0 && c0 >= 0 && b0 >= 0 && o1 < c0 && c1 < b0, "clipped range keeps the order");
    cairo_surface_destroy(im.s);
    lm_matrix_free(m);
}

/* Grid: a matrix of zeros beside one of ones. With one shared scale (centre
 * 0.5, asked for: they are different quantities) the left panel is blue and
 * the right one orange; with separate scales both would be white. Different layer counts are fine; NaN cells do not
 * count for the median. */
static void test_grid(void) {
    lm_err err;
    lm_matrix *a = filled(6, 0, "base", "grad-weight"), *b = filled(9, 1, "ft", "fisher");
    for (int k = 6 * LM_N_MODULES; k < 9 * LM_N_MODULES; k++) b->v[k] = NAN; /* equal counts: median 0.5 */
    const lm_matrix *two[2] = {a, b};
    const char *p = spath("grid.png");
    lm_plot_opts so;
    lm_plot_opts_default(&so);
    so.scales = LM_PLOT_SCALE_SHARED; /* two quantities: shared only when asked */
    CHECK_OK(lm_plot_write(two, 2, &so, p, &err), &err);
    image im;
    CHECK(load_png(&im, p) == 0, "grid png loads");
    if (im.s) {
        double xb = mean_x(&im, C_BLUE), xo = mean_x(&im, C_ORANGE);
        CHECK(xb >= 0 && xo >= 0 && xb < xo, "shared scale: blue left (%g), orange right (%g)", xb, xo);
        CHECK(im.w > im.h, "one row of two panels is wide: %dx%d", im.w, im.h);
        cairo_surface_destroy(im.s);
    }
    lm_matrix *c = filled(28, 0.5, "third", "ablate");
    const lm_matrix *three[3] = {a, b, c};
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.cols = 2;
    o.title = "A grid with a super-title that is rather long for its figure, to see it fit";
    CHECK_OK(lm_plot_write(three, 3, &o, p, &err), &err);
    CHECK(load_png(&im, p) == 0, "2-column grid loads");
    if (im.s) {
        CHECK(im.h > im.w / 2, "two rows: %dx%d", im.w, im.h);
        cairo_surface_destroy(im.s);
    }
    CHECK_OK(lm_plot_write(three, 3, &o, spath("grid.svg"), &err), &err);
    CHECK_OK(lm_plot_write(three, 3, &o, spath("grid.pdf"), &err), &err);
    CHECK(starts_with(spath("grid.pdf"), "%PDF-"), "grid pdf");
    lm_matrix_free(a);
    lm_matrix_free(b);
    lm_matrix_free(c);
}

/* Vector formats, large and degenerate matrices. */
static void test_formats_and_odd(void) {
    lm_err err;
    lm_matrix *m = filled(100, 0, "big", "act-sq");
    for (size_t k = 0; k < 100 * LM_N_MODULES; k++) m->v[k] = sin((double)k) * 1e-5;
    m->v[17] = NAN;
    const lm_matrix *one[1] = {m};
    const char *svg = spath("big.svg"), *pdf = spath("big.PDF"), *png = spath("big.png");
    CHECK_OK(lm_plot_write(one, 1, NULL, svg, &err), &err);
    CHECK_OK(lm_plot_write(one, 1, NULL, pdf, &err), &err);
    CHECK_OK(lm_plot_write(one, 1, NULL, png, &err), &err);
    CHECK(starts_with(svg, "<?xml") || starts_with(svg, "<svg"), "svg magic");
    CHECK(starts_with(pdf, "%PDF-"), "pdf magic (upper-case extension)");
    image im;
    CHECK(load_png(&im, png) == 0, "100-layer png loads");
    if (im.s) {
        CHECK(im.h > im.w && im.h < 8000, "100 layers: tall but bounded %dx%d", im.w, im.h);
        cairo_surface_destroy(im.s);
    }
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.label_step = 1; /* every layer: labels shrink */
    CHECK_OK(lm_plot_write(one, 1, &o, png, &err), &err);
    lm_matrix_free(m);

    const char *exts[] = {"png", "svg", "pdf"};
    lm_matrix *eq = filled(5, 3.25, "", ""), *nan = filled(4, NAN, "nan", "none"), *tiny = filled(1, 0, "one", "x");
    lm_matrix *huge = filled(3, 0, "m", "x");
    for (int k = 0; k < 21; k++) huge->v[k] = 1e12 * k;
    tiny->v[0] = 1e-9;
    const lm_matrix *odd[4] = {eq, nan, tiny, huge};
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 3; e++) {
            char name[64];
            snprintf(name, sizeof name, "odd%d.%s", i, exts[e]);
            const lm_matrix *x[1] = {odd[i]};
            CHECK_OK(lm_plot_write(x, 1, NULL, spath(name), &err), &err);
        }
    CHECK_OK(lm_plot_write(odd, 4, NULL, spath("odd-grid.png"), &err), &err);
    /* names that are not UTF-8 (a Latin-1 directory name) still draw */
    snprintf(eq->model, sizeof eq->model, "caf\xe9-\xff\xfe");
    snprintf(eq->method, sizeof eq->method, "m\xc3");
    CHECK_OK(lm_plot_write(odd, 1, NULL, spath("latin1.png"), &err), &err);
    CHECK_OK(lm_plot_write(odd, 1, NULL, spath("latin1.pdf"), &err), &err);
    lm_matrix_free(eq);
    lm_matrix_free(nan);
    lm_matrix_free(tiny);
    lm_matrix_free(huge);
}

/* Bad arguments, unwritable paths, atomic failures. */
static void test_errors(void) {
    lm_err err;
    lm_matrix *m = filled(4, 1, "m", "x");
    m->v[3] = 2;
    const lm_matrix *one[1] = {m};
    const char *p = spath("fig.bmp");
    CHECK(lm_plot_write(one, 1, NULL, p, &err) == LM_EARG && strstr(err.msg, "fig.bmp") &&
              strstr(err.msg, ".png"),
          "unknown extension: %s", err.msg);
    CHECK(!file_exists(p), "no file for a bad extension");
    p = spath("nodir/fig.png");
    CHECK(lm_plot_write(one, 1, NULL, p, &err) == LM_EIO && strstr(err.msg, "fig.png"), "unwritable: %s", err.msg);
    CHECK(lm_plot_write(one, 0, NULL, spath("x.png"), &err) == LM_EARG, "no matrices");
    const lm_matrix *none[1] = {NULL};
    CHECK(lm_plot_write(none, 1, NULL, spath("x.png"), &err) == LM_EARG, "NULL matrix");
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.has_range = 1;
    o.vmin = 2;
    o.vmax = 1;
    CHECK(lm_plot_write(one, 1, &o, spath("x.png"), &err) == LM_EARG && strstr(err.msg, "x.png"),
          "vmin > vmax: %s", err.msg);
    o.has_range = 0;
    o.has_center = 1;
    o.center = NAN;
    CHECK(lm_plot_write(one, 1, &o, spath("x.png"), &err) == LM_EARG, "NaN centre");
    CHECK(!file_exists(spath("x.png")), "no file for bad options");

    /* the target is a directory: rename fails, nothing is left over */
    p = spath("dir.png");
    mkdir(p, 0755);
    CHECK(lm_plot_write(one, 1, NULL, p, &err) == LM_EIO, "rename over a directory");
    CHECK(temp_files() == 0, "no temp file left");

    /* a write failing half-way leaves the old figure as it was */
    p = spath("keep.png");
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    struct stat before, after;
    stat(p, &before);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 2000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    m->v[0] = -5; /* a different picture */
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int r1 = lm_plot_write(one, 1, NULL, p, &err);
        int r2 = lm_plot_write(one, 1, NULL, spath("keep.pdf"), &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(r1 == LM_EIO && r2 == LM_EIO, "write past the size limit: %d %d", r1, r2);
        stat(p, &after);
        CHECK(after.st_size == before.st_size && after.st_ino == before.st_ino, "old figure untouched");
        CHECK(!file_exists(spath("keep.pdf")), "no partial pdf");
        CHECK(temp_files() == 0, "no temp file after a failed write");
    }
    signal(SIGXFSZ, prev);
    lm_matrix_free(m);
}

/* Every allocation of lm_plot_write (ours; cairo's are not routed through
 * lm_malloc) fails in turn: LM_ENOMEM, no file, no temp file, no leak. */
static void test_faults(void) {
    lm_matrix *a = filled(12, 0, "a", "x"), *b = filled(30, 1, "b", "y");
    for (int k = 0; k < 12 * LM_N_MODULES; k++) a->v[k] = k % 5;
    const lm_matrix *two[2] = {a, b};
    const char *fmts[] = {"f.png", "f.svg", "f.pdf"};
    for (int f = 0; f < 3; f++) {
        const char *p = spath(fmts[f]);
        int ok = 0, bad = 0, runs = 0;
        for (long nth = 1; nth < 100 && !ok; nth++) {
            lm_err err = {0};
            unlink(p);
            lm_fault_arm(nth);
            int rc = lm_plot_write(two, 2, NULL, p, &err);
            long hits = lm_fault_hits();
            lm_fault_arm(0);
            runs++;
            if (rc == LM_OK) {
                ok = 1;
                bad += hits != 0;
            } else if (rc != LM_ENOMEM || !hits || file_exists(p)) {
                bad++;
                fprintf(stderr, "plot %s nth %ld -> %d (%s)\n", fmts[f], nth, rc, err.msg);
            }
        }
        CHECK(ok && bad == 0 && runs > 1, "plot %s under fault injection: %d runs, %d bad", fmts[f], runs, bad);
    }
    CHECK(temp_files() == 0, "no temp files after faults");
    lm_matrix_free(a);
    lm_matrix_free(b);
}

/* The built command, beside this test binary: build/tests/test_plot ->
 * build/layermap. Skipped when it is not there. */
static void test_cli(const char *argv0) {
    char bin[1024], cmd[4096];
    snprintf(bin, sizeof bin, "%s", argv0);
    char *slash = strrchr(bin, '/');
    if (!slash) {
        printf("note: cli test skipped (no path in argv[0])\n");
        return;
    }
    *slash = 0;
    slash = strrchr(bin, '/');
    if (slash)
        snprintf(slash + 1, sizeof bin - (size_t)(slash + 1 - bin), "layermap");
    else
        snprintf(bin, sizeof bin, "layermap");
    if (access(bin, X_OK) != 0) {
        printf("note: cli test skipped (%s not built)\n", bin);
        return;
    }
    lm_err err;
    lm_matrix *m = filled(8, 0, "cli", "x");
    for (int k = 0; k < 8 * LM_N_MODULES; k++) m->v[k] = k * 0.01;
    const char *csv = spath("cli-in.csv"), *json = spath("cli-in2.json");
    CHECK_OK(lm_matrix_write_csv(m, csv, &err), &err);
    CHECK_OK(lm_matrix_write_json(m, json, &err), &err);
    const char *png = spath("cli-out.png"), *out_csv = spath("cli-out.csv"), *txt = spath("cli-stdout.txt");
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' -o '%s' -o '%s' --norm layer --title 'CLI test' > '%s' 2>&1", bin,
             csv, png, out_csv, txt);
    int rc = system(cmd);
    CHECK(rc == 0, "layermap plot exits 0 (%d): %s", rc, cmd);
    CHECK(starts_with(png, "\x89PNG"), "cli wrote the png");
    lm_matrix *r = NULL;
    CHECK_OK(lm_matrix_read_csv(&r, out_csv, &err), &err);
    if (r) {
        double s = 0;
        for (int c = 0; c < LM_N_MODULES; c++) s += lm_matrix_get(r, 3, c);
        CHECK_CLOSE(s, 1, 1e-12, 0, "--norm layer applied to the csv");
        lm_matrix_free(r);
    }
    char *text = NULL;
    size_t len;
    if (lm_file_read_all(txt, &text, &len, &err) == LM_OK) {
        CHECK(strstr(text, "attn.q") && strstr(text, "mlp.gate") && !strchr(text, '\x1b'),
              "plain heatmap on a non-terminal stdout: %.200s", text);
        lm_free(text);
    }
    /* a grid of two inputs, and separate figures without --grid */
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' '%s' --grid --cols 1 -o '%s' -q", bin, csv, json, spath("cli-grid.pdf"));
    CHECK(system(cmd) == 0, "grid: %s", cmd);
    CHECK(starts_with(spath("cli-grid.pdf"), "%PDF-"), "cli grid pdf");
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' '%s' -o '%s' -q", bin, csv, json, spath("cli-sep.svg"));
    CHECK(system(cmd) == 0, "separate: %s", cmd);
    CHECK(file_exists(spath("cli-sep-cli-in.svg")) && file_exists(spath("cli-sep-cli-in2.svg")),
          "one figure per input");
    /* failures: exit non-zero, nothing written */
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' -o '%s' -q 2>/dev/null", bin, spath("nope.csv"), spath("cli-no.png"));
    CHECK(system(cmd) != 0 && !file_exists(spath("cli-no.png")), "missing input fails");
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' -o '%s' -q 2>/dev/null", bin, csv, spath("cli-out.gif"));
    CHECK(system(cmd) != 0, "unknown output kind fails");
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' --norm rows -q 2>/dev/null", bin, csv);
    CHECK(system(cmd) != 0, "bad --norm fails");
    snprintf(cmd, sizeof cmd, "'%s' plot --help > /dev/null", bin);
    CHECK(system(cmd) == 0, "--help");
    lm_matrix_free(m);
}

/* Every group in turn; argv[0] locates the CLI. */
int main(int argc, char **argv) {
    (void)argc;
    test_png_colours();
    test_grid();
    test_formats_and_odd();
    test_errors();
    test_faults();
    test_cli(argv[0]);
    return TEST_END();
}

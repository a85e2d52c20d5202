/*
 * test_plot.c -- heatmap figures: PNG pixels read back with cairo (colours,
 * layer order, shared grid scale), SVG/PDF magic, odd matrices, errors,
 * atomic writes, fault injection, and the `layermap plot` command.
 */
#include "test.h"
#include "fault.h"

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

/* ---- locating cells in a PNG --------------------------------------------- */

/* 1 when pixel (x, y) is the page's pure white (cells never are: the
 * colormap's centre is #f7f7f7). */
static int page_white(const image *im, int x, int y) {
    int c[3];
    pixel(im, x, y, c);
    return c[0] == 255 && c[1] == 255 && c[2] == 255;
}

/* Start x of each horizontal run of at least minlen non-white pixels on row
 * y (heatmap cells; text and colour bars are narrower). Returns the count. */
static int hruns(const image *im, int y, int minlen, int *xs, int max) {
    int n = 0, start = -1;
    for (int x = 0; x <= im->w; x++) {
        int in = x < im->w && !page_white(im, x, y);
        if (in && start < 0) start = x;
        if (!in && start >= 0) {
            if (x - start >= minlen && n < max) xs[n++] = start;
            start = -1;
        }
    }
    return n;
}

/* Middle y of each vertical run of at least minlen non-white pixels in
 * column x (the cells of one heatmap column). Returns the count. */
static int vruns(const image *im, int x, int minlen, int *ys, int max) {
    int n = 0, start = -1;
    for (int y = 0; y <= im->h; y++) {
        int in = y < im->h && !page_white(im, x, y);
        if (in && start < 0) start = y;
        if (!in && start >= 0) {
            if (y - start >= minlen && n < max) ys[n++] = (start + y) / 2;
            start = -1;
        }
    }
    return n;
}

/* The first row (from the top) with exactly `want` cell runs, and their
 * start x; -1 when there is none. Cells are at least 60 px wide at 300 dpi. */
static int cell_row(const image *im, int want, int *xs) {
    int tmp[64];
    for (int y = 0; y < im->h; y++)
        if (hruns(im, y, 60, tmp, 64) == want) {
            y += 12; /* inside the row, past the edge's antialiasing */
            if (hruns(im, y, 60, xs, 64) != want) return -1;
            return y;
        }
    return -1;
}

/* Colours within tol on every channel. */
static int same_rgb(const int a[3], const int b[3], int tol) {
    return abs(a[0] - b[0]) <= tol && abs(a[1] - b[1]) <= tol && abs(a[2] - b[2]) <= tol;
}

/* ---- signed quantities ---------------------------------------------------- */

/* ablate rows +5, 0, -5, +2.5, -2.5: centred on 0 with range [-5, 5], so 0 is
 * the near-white centre, -5 full blue, +5 full orange, and +-2.5 are the
 * colormap at +-0.5. A lopsided ablate (as seen on SmolLM2: one 2021, the
 * rest 0..35 and -0.895) draws -0.895 near white, not dark blue. */
static void test_signed(void) {
    lm_err err;
    static const double rows[5] = {5, 0, -5, 2.5, -2.5};
    lm_matrix *m = filled(5, 0, "toy", "ablate");
    for (int l = 0; l < 5; l++)
        for (int c = 0; c < LM_N_MODULES; c++) lm_matrix_set(m, l, c, rows[l]);
    const lm_matrix *one[1] = {m};
    const char *p = spath("signed.png");
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    image im;
    CHECK(load_png(&im, p) == 0, "signed png loads");
    if (!im.s) return;
    int xs[64], ys[16];
    int y0 = cell_row(&im, 7, xs);
    CHECK(y0 >= 0, "a row of 7 cells");
    int x = y0 >= 0 ? xs[0] + 30 : 0;
    int nr = y0 >= 0 ? vruns(&im, x, 40, ys, 16) : 0;
    CHECK(nr == 5, "5 layers of cells in the first column: %d", nr);
    if (nr == 5) {
        int c[5][3];
        for (int l = 0; l < 5; l++) pixel(&im, x, ys[l], c[l]);
        CHECK(c[1][0] >= 0xf0 && c[1][1] >= 0xf0 && c[1][2] >= 0xf0 && abs(c[1][0] - c[1][2]) <= 3,
              "0 is white: %d %d %d", c[1][0], c[1][1], c[1][2]);
        CHECK(c[2][2] > c[2][0] + 60 && classify(c[2]) == C_BLUE, "-5 is full blue: %d %d %d", c[2][0], c[2][1],
              c[2][2]);
        CHECK(c[0][0] > c[0][2] + 60 && classify(c[0]) == C_ORANGE, "+5 is full orange: %d %d %d", c[0][0], c[0][1],
              c[0][2]);
        CHECK(c[3][0] > c[3][2] + 20 && c[4][2] > c[4][0] + 20, "+2.5 orange-ish, -2.5 blue-ish");
        double e[2][3];
        lm_colormap(0.5, e[0]);
        lm_colormap(-0.5, e[1]);
        int want_p[3], want_n[3];
        for (int k = 0; k < 3; k++) {
            want_p[k] = (int)lround(e[0][k] * 255);
            want_n[k] = (int)lround(e[1][k] * 255);
        }
        CHECK(same_rgb(c[3], want_p, 2) && same_rgb(c[4], want_n, 2),
              "+-2.5 are the colormap's mirror positions +-0.5: %d %d %d vs %d %d %d", c[3][0], c[3][1], c[3][2],
              c[4][0], c[4][1], c[4][2]);
    }
    cairo_surface_destroy(im.s);

    /* lopsided: row 0 at 2021, row 1 at -0.895, row 2 at 35 */
    lm_matrix *q = filled(3, 0, "smol", "ablate");
    for (int c = 0; c < LM_N_MODULES; c++) {
        lm_matrix_set(q, 0, c, 2021);
        lm_matrix_set(q, 1, c, -0.895);
        lm_matrix_set(q, 2, c, 35);
    }
    one[0] = q;
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    CHECK(load_png(&im, p) == 0, "lopsided png loads");
    if (!im.s) return;
    y0 = cell_row(&im, 7, xs);
    x = y0 >= 0 ? xs[0] + 30 : 0;
    nr = y0 >= 0 ? vruns(&im, x, 40, ys, 16) : 0;
    CHECK(nr == 3, "3 layers: %d", nr);
    if (nr == 3) {
        int c1[3], c2[3];
        pixel(&im, x, ys[1], c1);
        pixel(&im, x, ys[2], c2);
        CHECK(c1[0] >= 0xee && c1[2] >= c1[0], "-0.895 of 2021 is nearly white, a touch blue: %d %d %d", c1[0], c1[1],
              c1[2]);
        CHECK(c2[0] > c2[2] && c2[2] >= 0xd0, "35 of 2021 is a light orange: %d %d %d", c2[0], c2[1], c2[2]);
    }
    cairo_surface_destroy(im.s);

    /* an explicit centre wins over the signed default */
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.has_center = 1;
    o.center = 35;
    CHECK_OK(lm_plot_write(one, 1, &o, p, &err), &err);
    CHECK(load_png(&im, p) == 0, "centred png loads");
    if (im.s) {
        y0 = cell_row(&im, 7, xs);
        x = y0 >= 0 ? xs[0] + 30 : 0;
        nr = y0 >= 0 ? vruns(&im, x, 40, ys, 16) : 0;
        int c1[3], c2[3];
        if (nr == 3) {
            pixel(&im, x, ys[1], c1);
            pixel(&im, x, ys[2], c2);
        }
        CHECK(nr == 3 && classify(c1) == C_BLUE && classify(c2) == C_CENTRE, "--center 35: -0.895 blue, 35 white");
        cairo_surface_destroy(im.s);
    }
    lm_matrix_free(m);
    lm_matrix_free(q);
}

/* ---- per-panel and shared scales ------------------------------------------ */

/* act-sq rows 2, 1, 0 (median 1) beside wanda rows 9, 5, 1 (median 5): with a
 * scale each (the default for two quantities), 1 is white on the left and
 * full blue on the right; with --shared-scale both 1s are the same colour. */
static void test_panel_scales(void) {
    lm_err err;
    lm_matrix *a = filled(3, 0, "m", "act-sq"), *b = filled(3, 0, "m", "wanda");
    static const double ra[3] = {2, 1, 0}, rb[3] = {9, 5, 1};
    for (int l = 0; l < 3; l++)
        for (int c = 0; c < LM_N_MODULES; c++) {
            lm_matrix_set(a, l, c, ra[l]);
            lm_matrix_set(b, l, c, rb[l]);
        }
    const lm_matrix *two[2] = {a, b};
    CHECK(!lm_plot_same_quantity(two, 2), "act-sq and wanda are different quantities");
    const char *p = spath("panels.png");
    int got[2][2][3]; /* [mode][panel] colour of the value 1 */
    for (int mode = 0; mode < 2; mode++) {
        lm_plot_opts o;
        lm_plot_opts_default(&o);
        if (mode) o.scales = LM_PLOT_SCALE_SHARED;
        CHECK_OK(lm_plot_write(two, 2, &o, p, &err), &err);
        image im;
        CHECK(load_png(&im, p) == 0, "panels png loads");
        if (!im.s) return;
        int xs[64], ys[16], ys2[16];
        int y0 = cell_row(&im, 14, xs);
        CHECK(y0 >= 0, "one row of 2 x 7 cells (mode %d)", mode);
        if (y0 >= 0) {
            int na = vruns(&im, xs[0] + 30, 40, ys, 16), nb = vruns(&im, xs[7] + 30, 40, ys2, 16);
            CHECK(na == 3 && nb == 3, "3 layers in each panel: %d %d", na, nb);
            if (na == 3 && nb == 3) {
                pixel(&im, xs[0] + 30, ys[1], got[mode][0]);
                pixel(&im, xs[7] + 30, ys2[2], got[mode][1]);
            }
        }
        cairo_surface_destroy(im.s);
    }
    CHECK(classify(got[0][0]) == C_CENTRE && classify(got[0][1]) == C_BLUE,
          "own scales: 1 is the centre of act-sq (%d %d %d), the minimum of wanda (%d %d %d)", got[0][0][0],
          got[0][0][1], got[0][0][2], got[0][1][0], got[0][1][1], got[0][1][2]);
    CHECK(same_rgb(got[1][0], got[1][1], 2), "shared scale: one colour for 1 in both panels");

    /* same method, other models: one shared scale by default */
    lm_matrix *c = filled(3, 0, "other", "act-sq");
    for (int l = 0; l < 3; l++)
        for (int k = 0; k < LM_N_MODULES; k++) lm_matrix_set(c, l, k, rb[l]);
    const lm_matrix *same[2] = {a, c};
    CHECK(lm_plot_same_quantity(same, 2), "one method: one quantity");
    CHECK_OK(lm_plot_write(same, 2, NULL, p, &err), &err);
    image im;
    CHECK(load_png(&im, p) == 0, "same-quantity grid loads");
    if (im.s) {
        int xs[64], ys[16], ys2[16], c1[3] = {0}, c2[3] = {1};
        int y0 = cell_row(&im, 14, xs);
        if (y0 >= 0 && vruns(&im, xs[0] + 30, 40, ys, 16) == 3 && vruns(&im, xs[7] + 30, 40, ys2, 16) == 3) {
            pixel(&im, xs[0] + 30, ys[1], c1);
            pixel(&im, xs[7] + 30, ys2[2], c2);
        }
        CHECK(same_rgb(c1, c2, 2), "same quantity: shared by default");
        cairo_surface_destroy(im.s);
    }
    /* a normalised matrix is another quantity */
    snprintf(c->norm, sizeof c->norm, "layer");
    CHECK(!lm_plot_same_quantity(same, 2), "norm differs: another quantity");
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.scales = (lm_plot_scales)7;
    CHECK(lm_plot_write(same, 2, &o, p, &err) == LM_EARG, "unknown scale mode");
    lm_matrix_free(a);
    lm_matrix_free(b);
    lm_matrix_free(c);
}

/* act-stats as attribute emits it: act-sq (with block influence per layer)
 * and wanda: three panels, each with its own scale. */
static void test_act_stats(void) {
    lm_err err;
    lm_matrix *sq = filled(4, 0, "m", "act-sq"), *wa = filled(4, 0, "m", "wanda");
    for (int k = 0; k < 4 * LM_N_MODULES; k++) {
        sq->v[k] = 1e5 * (1 + k % 5);
        wa->v[k] = 0.01 * (1 + k % 3);
    }
    sq->layer_extra = lm_calloc(4, sizeof(double));
    for (int l = 0; l < 4; l++) sq->layer_extra[l] = 0.1 * (l + 1);
    snprintf(sq->layer_extra_name, sizeof sq->layer_extra_name, "block-influence");
    const lm_matrix *two[2] = {sq, wa};
    const char *p = spath("act-stats.png");
    CHECK_OK(lm_plot_write(two, 2, NULL, p, &err), &err);
    image im;
    CHECK(load_png(&im, p) == 0, "act-stats png loads");
    if (im.s) {
        int xs[64];
        CHECK(cell_row(&im, 15, xs) >= 0, "3 panels: 7 + 7 + 1 cells in a row");
        int ys[16];
        int nb = vruns(&im, xs[14] + 30, 40, ys, 16);
        CHECK(nb == 4, "block influence: one cell per layer (%d)", nb);
        if (nb == 4) { /* 0.1 .. 0.4, median 0.25: blue at layer 0, orange at layer 3 */
            int c0[3], c3[3];
            pixel(&im, xs[14] + 30, ys[0], c0);
            pixel(&im, xs[14] + 30, ys[3], c3);
            CHECK(classify(c0) == C_BLUE && classify(c3) == C_ORANGE, "block influence on its own scale");
        }
        /* wanda is not white on act-sq's scale: its own scale gives it a full range */
        int y = cell_row(&im, 15, xs), c[3], blue = 0, orange = 0;
        for (int yy = y - 12; yy < im.h; yy++)
            for (int xx = xs[7]; xx < xs[14] - 40; xx++) {
                pixel(&im, xx, yy, c);
                blue += classify(c) == C_BLUE;
                orange += classify(c) == C_ORANGE;
            }
        CHECK(blue > 1000 && orange > 1000, "wanda spans its own scale: %d blue, %d orange px", blue, orange);
        cairo_surface_destroy(im.s);
    }
    const char *svg = spath("act-stats.svg");
    CHECK_OK(lm_plot_write(two, 2, NULL, svg, &err), &err);
    char *text = NULL;
    size_t len;
    if (lm_file_read_all(svg, &text, &len, &err) == LM_OK) {
        CHECK(strstr(text, ">block influence</text>") && strstr(text, ">1 \xe2\x88\x92 cos(h_in, h_out)</text>") &&
                  strstr(text, "input energy") && strstr(text, "|W|"),
              "act-stats svg labels each panel's bar");
        lm_free(text);
    }
    lm_matrix_free(sq);
    lm_matrix_free(wa);
}

/* ---- SVG ------------------------------------------------------------------- */

/* A minimal XML well-formedness check: one root element, every tag closed in
 * order, attributes quoted, entities known, no '<' or '&' unescaped in text.
 * Returns NULL, or what is wrong. */
static const char *xml_check(const char *s) {
    static char why[128];
    const char *stack[256];
    size_t stack_len[256];
    int depth = 0, roots = 0;
    const char *p = s;
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) return "unterminated XML declaration";
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            int ok = 0;
            for (int i = 0; i < 5; i++) ok |= !strncmp(p, ents[i], strlen(ents[i]));
            if (!ok) return "unknown entity";
            p++;
            continue;
        }
        if (*p != '<') {
            if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t' && *p != '\r') return "control character";
            if (depth == 0 && *p != '\n' && *p != ' ') return "text outside the root";
            p++;
            continue;
        }
        if (!strncmp(p, "<!--", 4)) {
            p = strstr(p, "-->");
            if (!p) return "unterminated comment";
            p += 3;
            continue;
        }
        int closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t nl = strcspn(name, " \t\n/>");
        if (nl == 0) return "empty tag name";
        const char *q = name + nl;
        /* attributes: name="value" */
        while (*q == ' ' || *q == '\t' || *q == '\n') {
            while (*q == ' ' || *q == '\t' || *q == '\n') q++;
            if (*q == '/' || *q == '>') break;
            size_t an = strcspn(q, "=\"> /");
            if (an == 0 || q[an] != '=' || q[an + 1] != '"') return "unquoted attribute";
            q += an + 2;
            const char *end = strchr(q, '"');
            if (!end) return "unterminated attribute";
            for (const char *r = q; r < end; r++)
                if (*r == '<') return "'<' in an attribute";
            q = end + 1;
        }
        int self = *q == '/';
        if (self) q++;
        if (*q != '>') return "malformed tag";
        if (closing) {
            if (depth == 0 || stack_len[depth - 1] != nl || strncmp(stack[depth - 1], name, nl)) {
                snprintf(why, sizeof why, "</%.*s> does not close the open element", (int)nl, name);
                return why;
            }
            depth--;
        } else if (!self) {
            if (depth == 0) roots++;
            if (depth == 256) return "too deep";
            stack[depth] = name;
            stack_len[depth++] = nl;
        } else if (depth == 0) {
            roots++;
        }
        p = q + 1;
    }
    if (depth) return "unclosed element";
    if (roots != 1) return "not exactly one root element";
    return NULL;
}

/* 1 when the SVG text has a <text> element whose content is exactly want
 * (XML-escaped as the writer escapes it). */
static int has_text(const char *svg, const char *want) {
    for (const char *p = strstr(svg, "<text"); p; p = strstr(p + 1, "<text")) {
        const char *gt = strchr(p, '>');
        if (!gt) return 0;
        const char *end = strstr(gt, "</text>");
        if (end && (size_t)(end - gt - 1) == strlen(want) && !strncmp(gt + 1, want, strlen(want))) return 1;
    }
    return 0;
}

/* The SVG keeps every label as <text> (title, layer labels, module names,
 * ticks, the colour bar's quantity and min/max), names its font, has no glyph
 * outlines, and is well-formed XML even with markup and bad bytes in names. */
static void test_svg(void) {
    lm_err err;
    lm_matrix *m = filled(12, 0, "toy", "ablate");
    for (int k = 0; k < 12 * LM_N_MODULES; k++) m->v[k] = (k % 9) - 3.5;
    m->v[5] = NAN;
    lm_plot_opts o;
    lm_plot_opts_default(&o);
    o.title = "Ablation of a toy";
    const lm_matrix *one[1] = {m};
    const char *p = spath("text.svg");
    CHECK_OK(lm_plot_write(one, 1, &o, p, &err), &err);
    char *text = NULL;
    size_t len;
    CHECK_OK(lm_file_read_all(p, &text, &len, &err), &err);
    if (text) {
        const char *bad = xml_check(text);
        CHECK(!bad, "well-formed XML: %s", bad ? bad : "");
        CHECK(strstr(text, "font-family=\"DejaVu Sans") != NULL, "font named");
        CHECK(!strstr(text, "<symbol") && !strstr(text, "glyph") && !strstr(text, "<path"), "no glyph outlines");
        CHECK(has_text(text, "Ablation of a toy"), "title as text");
        CHECK(has_text(text, "layer") && has_text(text, "0") && has_text(text, "10"), "layer labels as text");
        int mods = 0;
        for (int c = 0; c < LM_N_MODULES; c++) mods += has_text(text, lm_module_names[c]);
        CHECK(mods == LM_N_MODULES, "module names as text: %d", mods);
        CHECK(has_text(text, "loss change, nats"), "colour-bar label as text");
        CHECK(has_text(text, "min") && has_text(text, "max"), "signed bar marks min and max");
        CHECK(has_text(text, "no value"), "NaN legend");
        CHECK(has_text(text, "\xe2\x88\x92" "4"), "negative tick with a typographic minus");
        lm_free(text);
    }
    /* a magnitude: median centre, no min/max marks; --norm layer says so */
    lm_matrix *g = filled(6, 0, "toy", "grad-weight");
    for (int k = 0; k < 6 * LM_N_MODULES; k++) g->v[k] = 1 + k % 4;
    CHECK_OK(lm_matrix_normalize(g, LM_NORM_LAYER, &err), &err);
    one[0] = g;
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    if (lm_file_read_all(p, &text, &len, &err) == LM_OK) {
        CHECK(!xml_check(text), "magnitude svg well-formed");
        CHECK(has_text(text, "|W\xc2\xb7" "dL/dW|, share of layer"), "normalised label");
        CHECK(!has_text(text, "min") && !has_text(text, "max"), "no min/max on a magnitude");
        lm_free(text);
    }
    /* names with markup, quotes, control characters and bad UTF-8 */
    snprintf(g->model, sizeof g->model, "a<b>&\"c\"\x01\x7f caf\xe9");
    snprintf(g->method, sizeof g->method, "x&y<z");
    CHECK_OK(lm_plot_write(one, 1, NULL, p, &err), &err);
    if (lm_file_read_all(p, &text, &len, &err) == LM_OK) {
        const char *bad = xml_check(text);
        CHECK(!bad, "escaped names: well-formed (%s)", bad ? bad : "");
        CHECK(strstr(text, "a&lt;b&gt;&amp;&quot;c&quot;") && strstr(text, "x&amp;y&lt;z"), "markup escaped");
        lm_free(text);
    }
    /* the grid svg of the earlier test, and the checker itself */
    CHECK(xml_check("<a><b></a></b>") && xml_check("<a x=1/>") && xml_check("<a>&nope;</a>") && xml_check("<a/><b/>") &&
              !xml_check("<?xml version=\"1.0\"?>\n<a x=\"1\"><b/>t &amp; u</a>\n"),
          "the XML check rejects broken documents");
    lm_matrix_free(m);
    lm_matrix_free(g);
}

/* Layer labels never overlap: in the SVG, right-aligned numeric labels of
 * one panel (same x) stand at least their font size apart, even beside a
 * 100-layer panel that makes every cell 3 pt tall. */
static void test_label_spacing(void) {
    lm_err err;
    lm_matrix *big = filled(100, 1, "big", "act-sq"), *small = filled(4, 2, "small", "act-sq");
    const lm_matrix *two[2] = {big, small};
    const char *p = spath("spacing.svg");
    CHECK_OK(lm_plot_write(two, 2, NULL, p, &err), &err);
    char *text = NULL;
    size_t len;
    if (lm_file_read_all(p, &text, &len, &err) != LM_OK) return;
    double xs[512], ys[512], fss[512];
    int n = 0;
    for (const char *q = strstr(text, "<text transform=\"translate("); q && n < 512;
         q = strstr(q + 1, "<text transform=\"translate(")) {
        double x, y, dy, fs;
        const char *gt = strchr(q, '>');
        if (!gt || !strstr(q, "text-anchor=\"end\"") || strstr(q, "text-anchor=\"end\"") > gt) continue;
        if (sscanf(q, "<text transform=\"translate(%lf %lf)\" y=\"%lf\" font-size=\"%lf\"", &x, &y, &dy, &fs) != 4)
            continue;
        if (gt[1] < '0' || gt[1] > '9') continue; /* a number: a layer label */
        xs[n] = x, ys[n] = y, fss[n] = fs, n++;
    }
    int pairs = 0, bad = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j || fabs(xs[i] - xs[j]) > 0.01 || ys[j] <= ys[i]) continue;
            int next = 1; /* j is the label right below i */
            for (int k = 0; k < n; k++)
                if (fabs(xs[k] - xs[i]) <= 0.01 && ys[k] > ys[i] && ys[k] < ys[j]) next = 0;
            if (!next) continue;
            pairs++;
            if (ys[j] - ys[i] < 0.95 * fss[i]) bad++;
        }
    CHECK(n >= 12 && pairs >= 10 && bad == 0, "%d layer labels, %d neighbours, %d too close", n, pairs, bad);
    lm_free(text);
    lm_matrix_free(big);
    lm_matrix_free(small);
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

/* Two matrices and the figure to write them to (fault injection). */
typedef struct plot_fault {
    const lm_matrix *const *ms;
    const char *path;
} plot_fault;

/* One lm_plot_write (fault-injection run): no file after a failure. */
static int fault_plot(void *ctx, lm_err *err, const char **why) {
    const plot_fault *f = ctx;
    unlink(f->path);
    int rc = lm_plot_write(f->ms, 2, NULL, f->path, err);
    if (rc != LM_OK && file_exists(f->path)) *why = "a figure after a failure";
    return rc;
}

/* Every allocation of lm_plot_write (ours; cairo's are not routed through
 * lm_malloc) fails in turn: LM_ENOMEM, no file, no temp file, no leak. */
static void test_faults(void) {
    lm_matrix *a = filled(12, 0, "a", "x"), *b = filled(30, 1, "b", "y");
    for (int k = 0; k < 12 * LM_N_MODULES; k++) a->v[k] = k % 5;
    const lm_matrix *two[2] = {a, b};
    const char *fmts[] = {"f.png", "f.svg", "f.pdf"};
    for (int f = 0; f < 3; f++) {
        plot_fault pf = {two, spath(fmts[f])};
        char name[32];
        snprintf(name, sizeof name, "plot %s", fmts[f]);
        fault_sweep(name, fault_plot, &pf, 100);
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
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' '%s' --grid --cols 1 -o '%s' -q 2>/dev/null", bin, csv, json, spath("cli-grid.pdf"));
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

    /* a grid of two quantities warns (one line) and gives each its own
     * scale; --shared-scale asks for one and does not warn */
    lm_matrix *w = filled(8, 0, "cli", "wanda");
    for (int k = 0; k < 8 * LM_N_MODULES; k++) w->v[k] = 100 + k;
    CHECK_OK(lm_matrix_write_json(w, spath("cli-w.json"), &err), &err);
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' '%s' --grid -o '%s' -q 2> '%s'", bin, spath("cli-in2.json"),
             spath("cli-w.json"), spath("cli-mixed.png"), spath("cli-stdout.txt"));
    CHECK(system(cmd) == 0, "mixed grid: %s", cmd);
    if (lm_file_read_all(spath("cli-stdout.txt"), &text, &len, &err) == LM_OK) {
        int lines = 0; /* ours only: a sanitizer build adds its own report */
        for (const char *q = text; (q = strstr(q, "layermap: ")); q++) lines++;
        CHECK(lines == 1 && strstr(text, "different quantities") && strstr(text, "--shared-scale"),
              "one warning line: %s", text);
        lm_free(text);
    }
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' '%s' --grid --shared-scale -o '%s' -q 2> '%s'", bin, spath("cli-in2.json"),
             spath("cli-w.json"), spath("cli-shared.png"), spath("cli-stdout.txt"));
    CHECK(system(cmd) == 0, "shared grid: %s", cmd);
    if (lm_file_read_all(spath("cli-stdout.txt"), &text, &len, &err) == LM_OK) {
        CHECK(!strstr(text, "layermap: "), "no warning with --shared-scale: %s", text);
        lm_free(text);
    }
    image im;
    int xs[64];
    CHECK(load_png(&im, spath("cli-shared.png")) == 0, "shared grid png");
    if (im.s) {
        CHECK(cell_row(&im, 14, xs) >= 0, "two panels");
        cairo_surface_destroy(im.s);
    }
    /* a lone --vmax on a signed quantity gives [-X, X] */
    snprintf(w->method, sizeof w->method, "ablate");
    w->v[3] = -2;
    CHECK_OK(lm_matrix_write_json(w, spath("cli-s.json"), &err), &err);
    snprintf(cmd, sizeof cmd, "'%s' plot '%s' --vmax 40 -o '%s' -q", bin, spath("cli-s.json"), spath("cli-s.svg"));
    CHECK(system(cmd) == 0, "lone --vmax: %s", cmd);
    if (lm_file_read_all(spath("cli-s.svg"), &text, &len, &err) == LM_OK) {
        CHECK(has_text(text, "\xe2\x88\x92" "40") && has_text(text, "40") && has_text(text, "0"),
              "signed --vmax 40: ticks from -40 to 40");
        lm_free(text);
    }
    lm_matrix_free(w);

    /* attribute -m act-stats draws act-sq, wanda and block influence */
    char model[1024];
    snprintf(model, sizeof model, "%s/stories260K-hf", models_dir());
    CHECK(access(model, R_OK) == 0, "test model %s (the shared test models)", model);
    FILE *f = fopen(spath("calib.txt"), "w");
    if (f) {
        for (int i = 0; i < 20; i++) fputs("Once upon a time, there was a little girl who liked to play. ", f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "'%s' attribute '%s' --data '%s' --seq-len 64 -m act-stats -o '%s' -o '%s' -q 2>/dev/null",
             bin, model, spath("calib.txt"), spath("cli-act.png"), spath("cli-act.svg"));
    CHECK(system(cmd) == 0, "act-stats: %s", cmd);
    CHECK(load_png(&im, spath("cli-act.png")) == 0, "act-stats png");
    if (im.s) {
        CHECK(cell_row(&im, 15, xs) >= 0, "act-stats: act-sq, wanda and block influence panels");
        cairo_surface_destroy(im.s);
    }
    if (lm_file_read_all(spath("cli-act.svg"), &text, &len, &err) == LM_OK) {
        CHECK(has_text(text, "block influence") && !xml_check(text), "act-stats svg");
        lm_free(text);
    }
    lm_matrix_free(m);
}

/* Every group in turn; argv[0] locates the CLI. */
int main(int argc, char **argv) {
    (void)argc;
    test_png_colours();
    test_grid();
    test_signed();
    test_panel_scales();
    test_act_stats();
    test_svg();
    test_label_spacing();
    test_formats_and_odd();
    test_errors();
    test_faults();
    test_cli(argv[0]);
    return TEST_END();
}

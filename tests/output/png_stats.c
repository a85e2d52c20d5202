/*
 * png_stats.c -- helper of tests/output/report_test.sh: prints
 * "WIDTH HEIGHT MEAN VARIANCE DISTINCT" of a PNG's luminance (0..255) and the
 * number of distinct colours, so the script can tell a blank screenshot from
 * a drawn one without Python. Exit 1 when the file is not a readable PNG.
 */
#include <cairo.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Open-addressing set of 24-bit colours: 1 when c was new. */
static int add_colour(uint32_t *set, size_t cap, uint32_t c) {
    size_t h = (c * 2654435761u) & (cap - 1);
    while (set[h]) {
        if (set[h] == c + 1) return 0;
        h = (h + 1) & (cap - 1);
    }
    set[h] = c + 1;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: png_stats FILE.png\n");
        return 2;
    }
    cairo_surface_t *s = cairo_image_surface_create_from_png(argv[1]);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        fprintf(stderr, "png_stats: %s: %s\n", argv[1], cairo_status_to_string(cairo_surface_status(s)));
        return 1;
    }
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    const unsigned char *d = cairo_image_surface_get_data(s);
    size_t cap = 1 << 20;
    uint32_t *set = calloc(cap, sizeof *set);
    if (!set) return 1;
    double sum = 0, sq = 0;
    long distinct = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t px;
            memcpy(&px, d + (size_t)y * stride + 4 * (size_t)x, 4);
            double r = (px >> 16) & 255, g = (px >> 8) & 255, b = px & 255;
            double l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
            sum += l;
            sq += l * l;
            if (distinct < (long)(cap / 2)) distinct += add_colour(set, cap, px & 0xffffff);
        }
    double n = (double)w * h, mean = n ? sum / n : 0;
    printf("%d %d %.3f %.3f %ld\n", w, h, mean, n ? sq / n - mean * mean : 0, distinct);
    free(set);
    cairo_surface_destroy(s);
    return 0;
}

/*
 * replay.c -- test_fuzz_replay: every harness of tests/fuzz/ run on every
 * file of its corpus, tests/fuzz/corpus/NAME/, without libFuzzer (built with
 * the project's compiler; in make asan under ASan + UBSan), so each input that
 * once crashed stays fixed. Each harness file is compiled with its two entry
 * points renamed to NAME_init / NAME_one (see the Makefile).
 *
 *   test_fuzz_replay                 every corpus, prints RESULT for tests/run.sh
 *   test_fuzz_replay NAME FILE...    the given files through one harness
 */
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

#define HARNESSES(X) \
    X(gguf) X(safetensors) X(st_index) X(config) X(tok_json) X(tok_encode) X(gguf_tok) X(jsonl) X(matrix) X(ckpt)

#define DECLARE(n) \
    int n##_init(int *argc, char ***argv); \
    int n##_one(const uint8_t *data, size_t size);
HARNESSES(DECLARE)

typedef struct harness {
    const char *name;
    int (*init)(int *, char ***);
    int (*one)(const uint8_t *, size_t);
} harness;

#define ENTRY(n) {#n, n##_init, n##_one},
static const harness harnesses[] = {HARNESSES(ENTRY)};
#define N_HARNESS (int)(sizeof harnesses / sizeof harnesses[0])

/* Read a whole file (malloc'd; NULL on failure). */
static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (len == cap) buf = realloc(buf, cap *= 2);
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0) break;
        len += r;
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Run one file through h; 1 if it could be read. */
static int replay_file(const harness *h, const char *path) {
    size_t n;
    uint8_t *buf = slurp(path, &n);
    CHECK(buf != NULL, "%s: cannot read", path);
    if (!buf) return 0;
    h->one(buf, n);
    free(buf);
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every file of corpus/NAME, in name order. */
static void replay_corpus(const harness *h, const char *root) {
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/%s", root, h->name);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "corpus %s exists", dir);
    if (!d) return;
    char **names = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int done = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        done += replay_file(h, path);
        free(names[i]);
    }
    free(names);
    CHECK(done >= 3, "corpus %s has %d inputs (at least 3 expected)", dir, done);
    printf("fuzz replay: %-12s %4d inputs\n", h->name, done);
}

static const harness *find(const char *name) {
    for (int i = 0; i < N_HARNESS; i++)
        if (!strcmp(harnesses[i].name, name)) return &harnesses[i];
    return NULL;
}

/* Set up h once; a fixture that is missing fails the run (the harness
 * printed which). */
static int setup(const harness *h, int *argc, char ***argv) {
    int rc = h->init(argc, argv);
    CHECK(rc == 0, "harness %s: setup failed", h->name);
    return rc == 0;
}

int main(int argc, char **argv) {
    /* corpus next to this source file (tests run from the repository root) */
    char root[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    snprintf(root, sizeof root, "%.*s/corpus", slash ? (int)(slash - f) : 1, slash ? f : ".");
    if (argc >= 3) {
        const harness *h = find(argv[1]);
        if (!h) {
            fprintf(stderr, "unknown harness '%s'\n", argv[1]);
            return 2;
        }
        if (!setup(h, &argc, &argv)) return test_end_("test_fuzz_replay.c");
        for (int i = 2; i < argc; i++) replay_file(h, argv[i]);
        return test_end_("test_fuzz_replay.c");
    }
    for (int i = 0; i < N_HARNESS; i++) {
        if (setup(&harnesses[i], &argc, &argv)) replay_corpus(&harnesses[i], root);
    }
    /* every corpus directory has a harness */
    DIR *d = opendir(root);
    CHECK(d != NULL, "%s exists", root);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') CHECK(find(e->d_name) != NULL, "corpus %s/%s has a harness", root, e->d_name);
        closedir(d);
    }
    return test_end_("test_fuzz_replay.c");
}

/*
 * test_imatrix.c -- llama.cpp's importance matrix (lm_imatrix_write) from
 * act-sq's per-column input sums, on stories260K:
 *   - llama.cpp's chunking of plain text (llamacpp_chunks): chunk c is BOS and
 *     then tokens [c*S, c*S + S - 1) of the text's tokens (llama-imatrix puts
 *     BOS over the chunk's first token), whole chunks only, max_tokens in whole
 *     chunks, JSONL and too little text refused;
 *   - the sums: q, k, v read the same input (and up, gate), so their columns
 *     are identical; the columns of each module add up to its act-sq cell;
 *   - the GGUF written, read back with layermap's own reader: general.type,
 *     imatrix.datasets / chunk_count / chunk_size, two F32 tensors per weight
 *     (NAME.in_sum2 [n_in] equal to the sums rounded to float, NAME.counts [1]
 *     = tokens), names in sorted order at aligned offsets;
 *   - the legacy .dat byte by byte: entries sorted, ncall = ceil(count / chunk),
 *     values (sum / count) * ncall, chunk count and dataset at the end;
 *   - --layers (only those layers), an HF model (blk.N.attn_q.weight names,
 *     the same values), errors (no column sums, unwritable path, no layer),
 *     and the fault-injection sweep of the GGUF writer.
 */
#include "test.h"
#include "fault.h"
#include "format/gguf.h"

#include <sys/stat.h>
#include <unistd.h>

#define NM LM_N_MODULES
#define CHUNK 128

static const char *const gguf_mod[NM] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down",
                                         "ffn_gate"};

typedef struct run {
    lm_model *m;
    lm_tokenizer *tok;
    lm_dataset *ds;
    lm_engine *e;
    lm_attr_result r;
} run;

static void run_free(run *x) {
    lm_attr_result_free(&x->r);
    lm_engine_free(x->e);
    lm_dataset_free(x->ds);
    lm_tokenizer_free(x->tok);
    lm_model_close(x->m);
    memset(x, 0, sizeof *x);
}

/* act-sq over data/calib.txt in llama.cpp's chunks of CHUNK tokens. */
static int run_act_sq(run *x, const char *model, int64_t max_tokens, lm_method method) {
    lm_err err = {0};
    memset(x, 0, sizeof *x);
    CHECK_OK(lm_model_open(&x->m, model, &err), &err);
    if (!x->m) return -1;
    CHECK_OK(lm_tokenizer_open(&x->tok, x->m, &err), &err);
    if (!x->tok) return -1;
    lm_data_opts dopt = {.seq_len = CHUNK, .max_tokens = max_tokens, .llamacpp_chunks = 1};
    CHECK_OK(lm_dataset_load(&x->ds, "data/calib.txt", x->tok, &dopt, &err), &err);
    if (!x->ds) return -1;
    lm_engine_opts eo = {.threads = 1, .max_seq = CHUNK, .max_batch = 2};
    CHECK_OK(lm_engine_new(&x->e, x->m, &eo, &err), &err);
    if (!x->e) return -1;
    lm_attr_opts ao;
    lm_attr_opts_default(&ao);
    ao.batch = 2;
    CHECK_OK(lm_attribute(x->e, x->ds, method, &ao, &x->r, &err), &err);
    return x->r.m ? 0 : -1;
}

/* The whole text's tokens (less one final newline), for the chunking checks. */
static int32_t *text_ids(const lm_tokenizer *tok, int *n) {
    FILE *f = fopen("data/calib.txt", "rb");
    if (!f) return NULL;
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (len && buf[len - 1] == '\n') len--; /* as llama.cpp's -f, and llamacpp_chunks */
    int32_t *ids = NULL;
    lm_err err = {0};
    if (lm_tokenize(tok, buf, len, 0, &ids, n, &err)) return NULL;
    return ids;
}

static void test_chunks(run *x) {
    int n = 0;
    int32_t *ids = text_ids(x->tok, &n);
    CHECK(ids != NULL, "tokenize data/calib.txt");
    if (!ids) return;
    int bos = lm_tokenizer_bos(x->tok), has_bos = lm_tokenizer_add_bos(x->tok) != 0;
    CHECK(has_bos && bos >= 0, "stories260K adds BOS (the case where llama.cpp overwrites a token)");
    const lm_dataset *d = x->ds;
    CHECK(d->n_seq == 16, "max_tokens 2048 = 16 whole chunks of %d, got %d", CHUNK, d->n_seq);
    int bad = 0;
    for (int c = 0; c < d->n_seq; c++) {
        const lm_seq *s = &d->seqs[c];
        bad += s->n != CHUNK || s->tok[0] != bos;
        for (int i = 1; i < s->n && !bad; i++) bad += s->tok[i] != ids[c * CHUNK + i - 1];
        for (int i = 0; i < s->n; i++) bad += s->mask[i] != (i < s->n - 1);
    }
    CHECK(bad == 0, "chunk c = BOS + ids[c*%d .. c*%d + %d): %d mismatches", CHUNK, CHUNK, CHUNK - 1, bad);

    /* all the text: (n + 1) / CHUNK whole chunks, the rest dropped */
    lm_err err = {0};
    lm_dataset *all = NULL;
    lm_data_opts o = {.seq_len = CHUNK, .llamacpp_chunks = 1};
    CHECK_OK(lm_dataset_load(&all, "data/calib.txt", x->tok, &o, &err), &err);
    if (all) {
        CHECK(all->n_seq == (n + 1) / CHUNK, "%d tokens + BOS: %d whole chunks, got %d", n, (n + 1) / CHUNK, all->n_seq);
        CHECK(all->n_tokens == (int64_t)all->n_seq * CHUNK, "every chunk whole");
        const lm_seq *s = &all->seqs[all->n_seq - 1];
        int c = all->n_seq - 1;
        CHECK(s->tok[CHUNK - 1] == ids[c * CHUNK + CHUNK - 2], "the last chunk's last token");
    }
    lm_dataset_free(all);
    /* a budget short of a chunk, JSONL: refused, naming the file */
    lm_dataset *none = NULL;
    o.max_tokens = CHUNK - 1;
    int rc = lm_dataset_load(&none, "data/calib.txt", x->tok, &o, &err);
    CHECK(rc == LM_EARG && !none && strstr(err.msg, "data/calib.txt") && strstr(err.msg, "whole chunk"),
          "max_tokens < chunk: %d %s", rc, err.msg);
    char jl[600];
    snprintf(jl, sizeof jl, "%s/d.jsonl", scratch_dir());
    FILE *f = fopen(jl, "w");
    fputs("{\"text\": \"Once upon a time\"}\n", f);
    fclose(f);
    o.max_tokens = 0;
    rc = lm_dataset_load(&none, jl, x->tok, &o, &err);
    CHECK(rc == LM_EARG && !none && strstr(err.msg, jl) && strstr(err.msg, "JSONL"), "JSONL: %d %s", rc, err.msg);
    free(ids);
}

/* q, k, v see one input and up, gate another: identical columns; the columns
 * of a module add up to its act-sq cell. */
static void test_sums(const run *x) {
    const lm_attr_result *r = &x->r;
    int L = x->m->cfg.n_layer;
    CHECK(r->in_sum2 && r->in_sum2_off, "act-sq has column sums");
    if (!r->in_sum2) return;
    int same = 1;
    double worst = 0;
    for (int l = 0; l < L; l++) {
        const size_t *off = r->in_sum2_off + l * NM;
        for (int m = 0; m < NM; m++) {
            size_t n = off[m + 1] - off[m];
            CHECK((int64_t)n == x->m->layers[l].w[m]->shape[1], "layer %d %s: %zu columns", l, lm_module_names[m], n);
            double s = 0;
            for (size_t j = 0; j < n; j++) s += r->in_sum2[off[m] + j];
            double cell = lm_matrix_get(r->m, l, m), d = fabs(s - cell) / cell;
            if (d > worst) worst = d;
        }
        size_t D = off[1] - off[0];
        same &= !memcmp(r->in_sum2 + off[LM_MOD_K], r->in_sum2 + off[LM_MOD_Q], D * sizeof(double));
        same &= !memcmp(r->in_sum2 + off[LM_MOD_V], r->in_sum2 + off[LM_MOD_Q], D * sizeof(double));
        same &= !memcmp(r->in_sum2 + off[LM_MOD_GATE], r->in_sum2 + off[LM_MOD_UP], D * sizeof(double));
    }
    CHECK(same, "q/k/v and up/gate columns identical");
    /* two summation orders of ~2^11 * 64 positive terms: relative difference
     * <= 2 * n * eps_double ~ 3e-11 */
    CHECK(worst <= 1e-10, "columns add up to the act-sq cell: worst relative %.3g", worst);
    CHECK(r->n_tokens == 16 * CHUNK, "tokens counted: %lld", (long long)r->n_tokens);
}

/* The GGUF read back: keys, tensors, values. layers: NULL or the flags written. */
static void check_gguf(const run *x, const char *path, const uint8_t *layers, int n_layers, int chunk_count) {
    lm_err err = {0};
    lm_gguf *g = NULL;
    CHECK_OK(lm_gguf_open(&g, path, &err), &err);
    if (!g) return;
    lm_gguf_str s;
    char buf[256];
    CHECK(lm_gguf_get_str(g, "general.type", &s, &err) == LM_OK, "general.type present");
    lm_gguf_str_copy(s, buf, sizeof buf);
    CHECK(!strcmp(buf, "imatrix"), "general.type = '%s'", buf);
    const lm_gguf_kv *ds = lm_gguf_find(g, "imatrix.datasets");
    CHECK(ds && ds->type == LM_GGUF_ARRAY && ds->arr_type == LM_GGUF_STRING && ds->n == 1, "imatrix.datasets: 1 string");
    if (ds && ds->n == 1) {
        lm_gguf_str_copy(lm_gguf_arr_str(ds, 0), buf, sizeof buf);
        CHECK(!strcmp(buf, "data/calib.txt"), "dataset '%s'", buf);
    }
    const lm_gguf_kv *cc = lm_gguf_find(g, "imatrix.chunk_count"), *cs = lm_gguf_find(g, "imatrix.chunk_size");
    CHECK(cc && cc->type == LM_GGUF_UINT32 && cs && cs->type == LM_GGUF_UINT32, "chunk keys are u32");
    int64_t v = 0;
    CHECK(lm_gguf_get_int(g, "imatrix.chunk_count", &v, &err) == LM_OK && v == chunk_count, "chunk_count %lld", (long long)v);
    CHECK(lm_gguf_get_int(g, "imatrix.chunk_size", &v, &err) == LM_OK && v == CHUNK, "chunk_size %lld", (long long)v);
    CHECK(g->alignment == 32, "alignment %llu", (unsigned long long)g->alignment);

    int L = x->m->cfg.n_layer, n_want = 0, bad_val = 0, bad_cnt = 0;
    for (int l = 0; l < L; l++) {
        if (layers && (l >= n_layers || !layers[l])) {
            snprintf(buf, sizeof buf, "blk.%d.attn_q.weight.in_sum2", l);
            CHECK(!lm_gguf_find_tensor(g, buf), "layer %d not asked for, but %s is there", l, buf);
            continue;
        }
        for (int m = 0; m < NM; m++) {
            n_want += 2;
            snprintf(buf, sizeof buf, "blk.%d.%s.weight.in_sum2", l, gguf_mod[m]);
            const lm_tensor *t = lm_gguf_find_tensor(g, buf);
            size_t off = x->r.in_sum2_off[l * NM + m], n = x->r.in_sum2_off[l * NM + m + 1] - off;
            CHECK(t && t->dtype == LM_DT_F32 && t->ndim == 1 && t->shape[0] == (int64_t)n, "%s: F32 [%zu]", buf, n);
            if (t && t->shape[0] == (int64_t)n)
                for (size_t j = 0; j < n; j++) {
                    float f;
                    memcpy(&f, t->data + 4 * j, 4);
                    bad_val += f != (float)x->r.in_sum2[off + j];
                }
            snprintf(buf, sizeof buf, "blk.%d.%s.weight.counts", l, gguf_mod[m]);
            t = lm_gguf_find_tensor(g, buf);
            CHECK(t && t->dtype == LM_DT_F32 && t->ndim == 1 && t->shape[0] == 1, "%s: F32 [1]", buf);
            if (t) {
                float f;
                memcpy(&f, t->data, 4);
                bad_cnt += f != (float)x->r.n_tokens;
            }
        }
    }
    CHECK((int)g->n_tensors == n_want, "%llu tensors, want %d", (unsigned long long)g->n_tensors, n_want);
    CHECK(bad_val == 0, "%d in_sum2 values differ from the sums rounded to float", bad_val);
    CHECK(bad_cnt == 0, "%d counts differ from %lld tokens", bad_cnt, (long long)x->r.n_tokens);
    /* file order: sorted by weight name, each weight's in_sum2 then counts */
    int order = 1;
    for (uint64_t i = 0; i + 1 < g->n_tensors; i++) {
        const char *a = g->tensors[i].name, *b = g->tensors[i + 1].name;
        size_t la = strrchr(a, '.') - a, lb = strrchr(b, '.') - b;
        int c = strncmp(a, b, la < lb ? la : lb);
        if (c == 0) c = la == lb ? 0 : la < lb ? -1 : 1;
        order &= c < 0 || (c == 0 && strstr(a, ".in_sum2") && strstr(b, ".counts"));
        order &= (g->tensors[i].data - g->tensors[0].data) % 32 == 0;
    }
    CHECK(order, "tensors sorted by weight name, in_sum2 before counts, aligned");
    lm_gguf_close(g);
}

static int32_t rd_i32(FILE *f) {
    int32_t v = -1;
    if (fread(&v, 4, 1, f) != 1) return -1;
    return v;
}

/* The legacy .dat byte by byte. */
static void check_dat(const run *x, const char *path, int chunk_count) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    int L = x->m->cfg.n_layer;
    CHECK(rd_i32(f) == L * NM, "n_entries");
    int64_t count = x->r.n_tokens;
    int32_t ncall = (int32_t)((count + CHUNK - 1) / CHUNK);
    char prev[128] = "", name[128];
    int bad = 0, sorted = 1;
    for (int i = 0; i < L * NM; i++) {
        int32_t len = rd_i32(f);
        if (len <= 0 || len >= (int)sizeof name || fread(name, 1, (size_t)len, f) != (size_t)len) {
            CHECK(0, "entry %d: name length %d", i, len);
            break;
        }
        name[len] = 0;
        sorted &= strcmp(prev, name) < 0;
        snprintf(prev, sizeof prev, "%s", name);
        int l = -1, m = -1;
        char mod[32];
        if (sscanf(name, "blk.%d.%31[a-z_].weight", &l, mod) == 2)
            for (int k = 0; k < NM; k++)
                if (!strcmp(mod, gguf_mod[k])) m = k;
        CHECK(l >= 0 && l < L && m >= 0, "entry name '%s'", name);
        if (m < 0) break;
        CHECK(rd_i32(f) == ncall, "%s: ncall", name);
        size_t off = x->r.in_sum2_off[l * NM + m], n = x->r.in_sum2_off[l * NM + m + 1] - off;
        CHECK(rd_i32(f) == (int32_t)n, "%s: nval", name);
        for (size_t j = 0; j < n; j++) {
            float v;
            if (fread(&v, 4, 1, f) != 1) {
                bad++;
                break;
            }
            bad += v != (float)(x->r.in_sum2[off + j] / (double)count * ncall);
        }
    }
    CHECK(sorted, ".dat entries sorted by name");
    CHECK(bad == 0, ".dat: %d values differ from (sum / count) * ncall", bad);
    CHECK(rd_i32(f) == chunk_count, ".dat chunk count");
    int32_t dl = rd_i32(f);
    char dsn[64] = "";
    CHECK(dl == 14 && fread(dsn, 1, 14, f) == 14 && !strcmp(dsn, "data/calib.txt"), ".dat dataset '%s'", dsn);
    CHECK(fgetc(f) == EOF, ".dat ends there");
    fclose(f);
}

/* Fault injection over the writer. */
typedef struct wctx {
    const run *x;
    const lm_imatrix_info *ii;
    const char *path;
} wctx;

static int write_run(void *ctx, lm_err *err, const char **why) {
    wctx *w = ctx;
    unlink(w->path);
    int rc = lm_imatrix_write(w->x->m, &w->x->r, w->ii, w->path, err);
    if (rc && access(w->path, F_OK) == 0) *why = "a file left after a failure";
    return rc;
}

int main(void) {
    char model[512], hf[512], path[600], dat[600];
    model_path(model, sizeof model, "stories260K.gguf");
    model_path(hf, sizeof hf, "stories260K-hf");
    run x, y;
    if (run_act_sq(&x, model, 16 * CHUNK, LM_METHOD_ACT_SQ)) {
        run_free(&x);
        return TEST_END();
    }
    test_chunks(&x);
    test_sums(&x);

    lm_err err = {0};
    lm_imatrix_info ii = {.dataset = "data/calib.txt", .chunk_size = CHUNK, .chunk_count = x.ds->n_seq};
    snprintf(path, sizeof path, "%s/s.imatrix.gguf", scratch_dir());
    CHECK_OK(lm_imatrix_write(x.m, &x.r, &ii, path, &err), &err);
    check_gguf(&x, path, NULL, 0, 16);
    snprintf(dat, sizeof dat, "%s/s.imatrix.dat", scratch_dir());
    CHECK_OK(lm_imatrix_write(x.m, &x.r, &ii, dat, &err), &err);
    check_dat(&x, dat, 16);

    /* --layers 1,3: only those */
    uint8_t keep[4] = {0, 1, 0, 1};
    lm_imatrix_info some = ii;
    some.layers = keep;
    some.n_layers = 4;
    snprintf(path, sizeof path, "%s/some.gguf", scratch_dir());
    CHECK_OK(lm_imatrix_write(x.m, &x.r, &some, path, &err), &err);
    check_gguf(&x, path, keep, 4, 16);

    /* the HF model: llama.cpp's names, the same sums (the loaders give bit-identical weights) */
    if (run_act_sq(&y, hf, 16 * CHUNK, LM_METHOD_WANDA) == 0) {
        snprintf(path, sizeof path, "%s/hf.gguf", scratch_dir());
        CHECK_OK(lm_imatrix_write(y.m, &y.r, &ii, path, &err), &err);
        check_gguf(&x, path, NULL, 0, 16); /* names of the GGUF, values of the GGUF run */
        size_t nv = x.r.in_sum2_off[x.m->cfg.n_layer * NM];
        double worst = 0;
        for (size_t j = 0; j < nv; j++) {
            double d = fabs(y.r.in_sum2[j] - x.r.in_sum2[j]) / fmax(x.r.in_sum2[j], 1e-30);
            if (d > worst) worst = d;
        }
        printf("  HF vs GGUF stories260K: in_sum2 worst relative difference %.3g\n", worst);
    }
    run_free(&y);

    /* errors: no column sums, no layer, an unwritable path (no file left) */
    lm_attr_result none = x.r;
    none.in_sum2 = NULL;
    CHECK(lm_imatrix_write(x.m, &none, &ii, path, &err) == LM_EARG && strstr(err.msg, "act-sq"), "%s", err.msg);
    uint8_t nolayer[1] = {0};
    some.layers = nolayer;
    some.n_layers = 1;
    CHECK(lm_imatrix_write(x.m, &x.r, &some, path, &err) == LM_EARG, "no layer: %s", err.msg);
    CHECK(lm_imatrix_write(x.m, &x.r, &ii, "/nonexistent-dir/x.gguf", &err) == LM_EIO &&
              strstr(err.msg, "/nonexistent-dir/x.gguf"), "unwritable: %s", err.msg);
    lm_imatrix_info bad = ii;
    bad.chunk_size = 0;
    CHECK(lm_imatrix_write(x.m, &x.r, &bad, path, &err) == LM_EARG, "chunk size 0: %s", err.msg);
    double keep0 = x.r.in_sum2[5];
    x.r.in_sum2[5] = NAN;
    CHECK(lm_imatrix_write(x.m, &x.r, &ii, path, &err) == LM_EARG && strstr(err.msg, "blk.0.attn_q.weight") &&
              strstr(err.msg, "non-finite"), "NaN: %s", err.msg);
    x.r.in_sum2[5] = keep0;

    snprintf(path, sizeof path, "%s/fault.gguf", scratch_dir());
    wctx w = {&x, &ii, path};
    CHECK(fault_sweep("imatrix gguf", write_run, &w, 1000) > 2, "the GGUF writer allocates");
    w.path = dat;
    CHECK(fault_sweep("imatrix dat", write_run, &w, 1000) > 2, "the .dat writer allocates");
    run_free(&x);
    return TEST_END();
}

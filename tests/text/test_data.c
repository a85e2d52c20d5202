/*
 * test_data.c -- lm_dataset_load: plain-text chunking (BOS, short last chunk,
 * max_tokens), JSONL "text" and "prompt"/"completion" (masks), format
 * detection, and the errors: bad JSON line, invalid UTF-8, empty data, bad
 * options; fault injection; the in-memory entries (lm_dataset_from_text,
 * _from_texts, _from_ids) against the file formats.
 */
#include "test.h"
#include "fault.h"

#include "text/tokenizer.h"

#include <stdint.h>

static lm_tokenizer *stories, *smol;

/* Write s to scratch_dir()/name; returns the path (static buffer per call site). */
static const char *write_file(const char *name, const char *s, size_t n) {
    static char paths[32][1024];
    static int k;
    char *p = paths[k++ % 32];
    snprintf(p, sizeof paths[0], "%.512s/%.256s", scratch_dir(), name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(s, 1, n, f) != n) {
        perror(p);
        exit(2);
    }
    fclose(f);
    return p;
}

static const char *write_str(const char *name, const char *s) { return write_file(name, s, strlen(s)); }

/* Load with seq_len / max_tokens; NULL and *rc on failure. */
static lm_dataset *load(const char *path, const lm_tokenizer *t, int seq_len, int64_t max_tokens, int *rc,
                        lm_err *err) {
    lm_dataset *d = NULL;
    lm_data_opts o = {.seq_len = seq_len, .max_tokens = max_tokens};
    *rc = lm_dataset_load(&d, path, t, &o, err);
    return d;
}

/* n_tokens and n_targets agree with the sequences; every mask ends in 0. */
static void check_totals(const lm_dataset *d, const char *what) {
    int64_t nt = 0, ng = 0;
    int ok = 1;
    for (int i = 0; i < d->n_seq; i++) {
        nt += d->seqs[i].n;
        for (int j = 0; j < d->seqs[i].n; j++) ng += d->seqs[i].mask[j];
        ok &= d->seqs[i].n >= 2 && d->seqs[i].mask[d->seqs[i].n - 1] == 0;
    }
    CHECK(nt == d->n_tokens && ng == d->n_targets && ok, "%s: totals %lld/%lld vs %lld/%lld", what, (long long)nt,
          (long long)ng, (long long)d->n_tokens, (long long)d->n_targets);
}

static const char *STORY =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.\n"
    "One day, she saw a big red ball in the park. She wanted to play with it, but it was too high.\n"
    "Lily asked her mom for help. Her mom smiled and said, \"Let's get it together!\"\n"
    "They got the ball and played all day. Lily was very happy.\n";

/* Plain text: chunks of seq_len with BOS (stories) or without (SmolLM2), and
 * their concatenation is the tokenization of the whole file. */
static void test_plain(void) {
    lm_err err = {0};
    int rc;
    const char *p = write_str("story.txt", STORY);
    int32_t *all;
    int n_all;
    for (int k = 0; k < 2; k++) {
        const lm_tokenizer *t = k ? smol : stories;
        int bos = k ? -1 : 1;
        CHECK_OK(lm_tokenize(t, STORY, strlen(STORY), 0, &all, &n_all, &err), &err);
        lm_dataset *d = load(p, t, 16, 0, &rc, &err);
        CHECK(rc == LM_OK && d, "load %s: %s", p, err.msg);
        if (!d) continue;
        int body = bos >= 0 ? 15 : 16, pos = 0, ok = 1;
        for (int i = 0; i < d->n_seq; i++) {
            const lm_seq *s = &d->seqs[i];
            int off = bos >= 0;
            if (bos >= 0) ok &= s->tok[0] == bos;
            ok &= i + 1 == d->n_seq ? s->n <= 16 : s->n == 16;
            for (int j = off; j < s->n; j++) ok &= pos < n_all && s->tok[j] == all[pos++];
            for (int j = 0; j < s->n; j++) ok &= s->mask[j] == (j < s->n - 1);
        }
        int expect = (n_all + body - 1) / body;
        if (n_all % body == 1 && bos < 0) expect--; /* a 1-token tail is no sequence */
        CHECK(ok && pos == n_all - (bos < 0 && n_all % body == 1), "%s chunks hold the file's tokens in order",
              k ? "smollm2" : "stories");
        CHECK(d->n_seq == expect, "n_seq %d, want %d (%d tokens)", d->n_seq, expect, n_all);
        check_totals(d, "plain");
        lm_dataset_free(d);

        /* a tail of exactly 1 text token: kept with BOS (2 tokens), dropped without */
        for (int sl = 3; sl < 40; sl++) {
            int b = sl - (bos >= 0);
            if (n_all % b != 1) continue;
            d = load(p, t, sl, 0, &rc, &err);
            if (!d) break;
            const lm_seq *last = &d->seqs[d->n_seq - 1];
            if (bos >= 0)
                CHECK(d->n_seq == n_all / b + 1 && last->n == 2 && last->tok[0] == bos && last->tok[1] == all[n_all - 1],
                      "seq_len %d: BOS + last token kept (%d seqs, last %d)", sl, d->n_seq, last->n);
            else
                CHECK(d->n_seq == n_all / b && last->n == sl, "seq_len %d: 1-token tail dropped", sl);
            lm_dataset_free(d);
            break;
        }
        /* max_tokens: exactly that many tokens, the last sequence cut */
        d = load(p, t, 16, 40, &rc, &err);
        CHECK(d && d->n_tokens == 40 && d->n_seq == 3 && d->seqs[2].n == 8, "max_tokens 40: %lld tokens, %d seqs",
              d ? (long long)d->n_tokens : -1, d ? d->n_seq : -1);
        if (d) check_totals(d, "max_tokens");
        lm_dataset_free(d);
        free(all);
    }
}

/* max_tokens on a large file tokenizes only a prefix, with the same tokens. */
static void test_prefix(void) {
    size_t n = 0, cap = 400000, sl = strlen(STORY);
    char *big = malloc(cap + sl);
    for (; n < cap; n += sl) memcpy(big + n, STORY, sl);
    const char *p = write_file("big.txt", big, n);
    lm_err err = {0};
    int rc;
    int32_t *all;
    int n_all;
    CHECK_OK(lm_tokenize(stories, big, n, 0, &all, &n_all, &err), &err);
    double t0 = lm_now();
    lm_dataset *d = load(p, stories, 64, 1000, &rc, &err);
    double dt = lm_now() - t0;
    CHECK(d && d->n_tokens == 1000, "prefix load: %s", err.msg);
    if (d) {
        int pos = 0, ok = 1;
        for (int i = 0; i < d->n_seq; i++)
            for (int j = 1; j < d->seqs[i].n; j++) ok &= d->seqs[i].tok[j] == all[pos++];
        CHECK(ok, "max_tokens prefix gives the whole file's first tokens");
        lm_dataset_free(d);
    }
    printf("max_tokens=1000 on %.1f MB: %.1f ms\n", n / 1e6, dt * 1e3);
    free(all);
    free(big);
}

/* JSONL with "text": one sequence per line, BOS as the model says, truncated. */
static void test_jsonl_text(void) {
    const char *p = write_str("text.jsonl",
                              "{\"text\": \"Once upon a time\"}\n"
                              "\n"
                              "   \n"
                              "{\"text\": \"Lily liked the park. She played with the ball all day long and was happy.\"}\r\n"
                              "{\"text\": \"caf\\u00e9 \\\"quoted\\\"\", \"other\": 1}\n");
    lm_err err = {0};
    int rc;
    lm_dataset *d = load(p, stories, 8, 0, &rc, &err);
    CHECK(rc == LM_OK && d && d->n_seq == 3, "jsonl text: rc %d %s", rc, err.msg);
    if (!d) return;
    int32_t *v;
    int n;
    CHECK_OK(lm_tokenize(stories, "Once upon a time", 16, -1, &v, &n, &err), &err);
    CHECK(d->seqs[0].n == n && !memcmp(d->seqs[0].tok, v, sizeof *v * (size_t)n) && v[0] == 1, "line 1 tokens");
    free(v);
    CHECK(d->seqs[1].n == 8 && d->seqs[1].tok[0] == 1, "long line truncated to seq_len (%d)", d->seqs[1].n);
    CHECK_OK(lm_tokenize(stories, "caf\xc3\xa9 \"quoted\"", 15, -1, &v, &n, &err), &err);
    CHECK(d->seqs[2].n == (n < 8 ? n : 8) && !memcmp(d->seqs[2].tok, v, sizeof *v * (size_t)d->seqs[2].n),
          "JSON escapes decoded");
    free(v);
    for (int i = 0; i < d->n_seq; i++)
        for (int j = 0; j < d->seqs[i].n; j++) CHECK(d->seqs[i].mask[j] == (j < d->seqs[i].n - 1), "text mask");
    check_totals(d, "jsonl text");
    lm_dataset_free(d);
}

/* JSONL prompt/completion: loss only where the next token is a completion token. */
static void test_jsonl_pc(void) {
    const char *p = write_str("pc.jsonl", "{\"prompt\": \"Once upon a\", \"completion\": \" time there was\"}\n"
                                          "{\"prompt\": \"Q: 2+2=\", \"completion\": \"4\"}\n"
                                          "{\"prompt\": \"no completion\", \"completion\": \"\"}\n");
    lm_err err = {0};
    int rc;
    for (int k = 0; k < 2; k++) {
        const lm_tokenizer *t = k ? smol : stories;
        lm_dataset *d = load(p, t, 64, 0, &rc, &err);
        CHECK(rc == LM_OK && d && d->n_seq == 2, "prompt/completion: rc %d n_seq %d %s", rc, d ? d->n_seq : -1,
              err.msg);
        if (!d) continue;
        const char *pr[] = {"Once upon a", "Q: 2+2="}, *co[] = {" time there was", "4"};
        for (int s = 0; s < 2; s++) {
            int32_t *a, *b;
            int na, nb;
            CHECK_OK(lm_tokenize(t, pr[s], strlen(pr[s]), -1, &a, &na, &err), &err);
            CHECK_OK(lm_tokenize_ex(t, co[s], strlen(co[s]), 0, TOK_CONTINUE, &b, &nb, &err), &err);
            const lm_seq *q = &d->seqs[s];
            int ok = q->n == na + nb;
            for (int i = 0; ok && i < q->n; i++) {
                ok &= q->tok[i] == (i < na ? a[i] : b[i - na]);
                ok &= q->mask[i] == (i + 1 >= na && i + 1 < q->n);
            }
            CHECK(ok, "seq %d: prompt+completion tokens and mask (targets = %d completion tokens)", s, nb);
            int targets = 0;
            for (int i = 0; i < q->n; i++) targets += q->mask[i];
            CHECK(targets == nb, "seq %d: %d targets, want %d", s, targets, nb);
            free(a);
            free(b);
        }
        /* the completion continues the prompt: same ids as the joined text */
        int32_t *j;
        int nj;
        CHECK_OK(lm_tokenize(t, "Once upon a time there was", 26, -1, &j, &nj, &err), &err);
        CHECK(nj == d->seqs[0].n && !memcmp(j, d->seqs[0].tok, sizeof *j * (size_t)nj),
              "prompt + ' time there was' tokenizes like the whole sentence");
        free(j);
        check_totals(d, "prompt/completion");
        lm_dataset_free(d);
    }
    /* a prompt longer than seq_len leaves no target: the only line is dropped -> error */
    p = write_str("pc-long.jsonl", "{\"prompt\": \"Once upon a time there was a girl\", \"completion\": \" who\"}\n");
    lm_dataset *d = load(p, stories, 4, 0, &rc, &err);
    CHECK(rc == LM_EARG && !d && strstr(err.msg, p), "prompt over seq_len: rc %d '%s'", rc, err.msg);
    /* truncation keeps the completion's first tokens counted */
    d = load(p, stories, 12, 0, &rc, &err);
    CHECK(rc == LM_OK && d && d->n_seq == 1, "%s", err.msg);
    if (d) check_totals(d, "pc truncated");
    lm_dataset_free(d);
}

/* Files that must fail, with the code and words of the message. */
static void test_errors(void) {
    struct { const char *name, *content; size_t len; int code; const char *needle; } cases[] = {
        {"bad3.jsonl", "{\"text\": \"a b c\"}\n{\"text\": \"d e\"}\n{\"text\": \"oops\"\n{\"text\": \"x\"}\n", 0,
         LM_ECORRUPT, "line 3"},
        {"notobj.jsonl", "{\"text\": \"a b\"}\n[1, 2]\n", 0, LM_ECORRUPT, "line 2"},
        {"nofield.jsonl", "{\"text\": \"a b\"}\n{\"body\": \"x\"}\n", 0, LM_ECORRUPT, "line 2"},
        {"numtext.jsonl", "{\"text\": 5}\n", 0, LM_ECORRUPT, "line 1"},
        {"badutf8.txt", "hello world\nsecond \xc3\x28 line\n", 0, LM_EENCODING, "offset 19"},
        {"badutf8.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n", 0, LM_EENCODING, "offset 25"},
        {"empty.txt", "", 0, LM_EARG, "empty"},
        {"blank.txt", "  \n\n\t \n", 0, LM_EARG, "blank"},
        {"short.txt", "a", 0, LM_EARG, "no sequence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = write_file(cases[i].name, cases[i].content, strlen(cases[i].content));
        lm_err err = {0};
        int rc;
        lm_dataset *d = load(p, smol, 16, 0, &rc, &err);
        CHECK(rc == cases[i].code && !d && strstr(err.msg, cases[i].needle) && strstr(err.msg, p),
              "%s: rc %d '%s'", cases[i].name, rc, err.msg);
        lm_dataset_free(d);
    }
    lm_err err = {0};
    int rc;
    const char *p = write_str("ok.txt", STORY);
    CHECK(!load(p, smol, 1, 0, &rc, &err) && rc == LM_EARG, "seq_len 1: %s", err.msg);
    CHECK(!load(p, smol, 16, -5, &rc, &err) && rc == LM_EARG, "negative max_tokens: %s", err.msg);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.txt", scratch_dir());
    CHECK(!load(missing, smol, 16, 0, &rc, &err) && rc == LM_EIO && strstr(err.msg, missing), "missing file: %s",
          err.msg);
    /* a byte order mark is skipped; text starting with '{' after it is still JSONL */
    p = write_str("bom.jsonl", "\xef\xbb\xbf{\"text\": \"Hello there\"}\n");
    lm_dataset *d = load(p, smol, 16, 0, &rc, &err);
    CHECK(rc == LM_OK && d && d->n_seq == 1, "BOM + JSONL: %s", err.msg);
    lm_dataset_free(d);
    /* plain text that merely contains braces later is plain text */
    p = write_str("code.txt", "int f() { return 1; }\n{ not json }\n");
    d = load(p, smol, 8, 0, &rc, &err);
    CHECK(rc == LM_OK && d && d->n_seq >= 1, "plain text with braces: %s", err.msg);
    lm_dataset_free(d);
}

/* Load the file ctx with the stories tokenizer (fault-injection run). */
static int fault_load(void *ctx, lm_err *err, const char **why) {
    lm_dataset *d = NULL;
    lm_data_opts o = {.seq_len = 16};
    int rc = lm_dataset_load(&d, ctx, stories, &o, err);
    if (rc != LM_OK && d) *why = "dataset not NULL after a failure";
    lm_dataset_free(d);
    return rc;
}

/* Every allocation may fail: LM_ENOMEM, nothing leaked (make asan). */
static void test_faults(void) {
    const char *files[] = {write_str("f1.txt", STORY),
                           write_str("f2.jsonl", "{\"text\": \"Once upon a time\"}\n"
                                                 "{\"prompt\": \"Lily\", \"completion\": \" was happy\"}\n")};
    for (int k = 0; k < 2; k++) fault_sweep(lm_basename(files[k]), fault_load, (void *)files[k], 100000);
}

/* Two datasets hold the same sequences (tokens, masks, totals). */
static int same_data(const lm_dataset *a, const lm_dataset *b) {
    if (!a || !b || a->n_seq != b->n_seq || a->n_tokens != b->n_tokens || a->n_targets != b->n_targets) return 0;
    for (int i = 0; i < a->n_seq; i++) {
        const lm_seq *x = &a->seqs[i], *y = &b->seqs[i];
        if (x->n != y->n || memcmp(x->tok, y->tok, sizeof *x->tok * (size_t)x->n) || memcmp(x->mask, y->mask, (size_t)x->n))
            return 0;
    }
    return 1;
}

/* In memory: one text == the same text file; n texts == JSONL "text"; n
 * prompt/completion pairs == JSONL p/c; ids as given; the errors name the record. */
static void test_memory(void) {
    lm_err err = {0};
    int rc;
    lm_data_opts o = {.seq_len = 16}, o_budget = {.seq_len = 16, .max_tokens = 40};
    for (int k = 0; k < 2; k++) {
        const lm_tokenizer *t = k ? smol : stories;
        const lm_data_opts *opts[2] = {&o, &o_budget};
        for (int b = 0; b < 2; b++) {
            lm_dataset *f = load(write_str("mem.txt", STORY), t, 16, opts[b]->max_tokens, &rc, &err), *m = NULL;
            CHECK_OK(lm_dataset_from_text(&m, STORY, strlen(STORY), t, opts[b], &err), &err);
            CHECK(same_data(f, m), "from_text == text file (tokenizer %d, max_tokens %lld)", k,
                  (long long)opts[b]->max_tokens);
            lm_dataset_free(f);
            lm_dataset_free(m);
        }
        const char *texts[] = {"Once upon a time", "Lily liked the park. She played with the ball all day long.",
                               "caf\xc3\xa9 \"quoted\""};
        size_t lens[3] = {strlen(texts[0]), strlen(texts[1]), strlen(texts[2])};
        lm_dataset *f = load(write_str("mem.jsonl", "{\"text\": \"Once upon a time\"}\n"
                                                    "{\"text\": \"Lily liked the park. She played with the ball all day long.\"}\n"
                                                    "{\"text\": \"caf\\u00e9 \\\"quoted\\\"\"}\n"),
                             t, 16, 0, &rc, &err),
                   *m = NULL;
        CHECK_OK(lm_dataset_from_texts(&m, texts, lens, NULL, NULL, 3, t, &o, &err), &err);
        CHECK(same_data(f, m), "from_texts == JSONL text (tokenizer %d)", k);
        lm_dataset_free(f);
        lm_dataset_free(m);
        const char *pr[] = {"Once upon a", "Q: 2+2="}, *co[] = {" time there was", "4"};
        size_t pl[2] = {strlen(pr[0]), strlen(pr[1])}, cl[2] = {strlen(co[0]), strlen(co[1])};
        f = load(write_str("mem-pc.jsonl", "{\"prompt\": \"Once upon a\", \"completion\": \" time there was\"}\n"
                                           "{\"prompt\": \"Q: 2+2=\", \"completion\": \"4\"}\n"),
                 t, 16, 0, &rc, &err);
        m = NULL;
        CHECK_OK(lm_dataset_from_texts(&m, pr, pl, co, cl, 2, t, &o, &err), &err);
        CHECK(same_data(f, m), "from_texts(pairs) == JSONL prompt/completion (tokenizer %d)", k);
        lm_dataset_free(f);
        lm_dataset_free(m);
    }
    /* ids: as given, truncated to seq_len, all predictions counted; max_tokens cuts */
    int32_t a[] = {1, 5, 9, 2, 7}, b2[] = {3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}, c[] = {8};
    const int32_t *ids[] = {a, b2, c};
    int lens[] = {5, 20, 1};
    lm_dataset *d = NULL;
    CHECK_OK(lm_dataset_from_ids(&d, ids, lens, 3, 512, &o, &err), &err);
    CHECK(d && d->n_seq == 2 && d->seqs[0].n == 5 && d->seqs[1].n == 16 && d->n_tokens == 21 && d->n_targets == 19 &&
              !memcmp(d->seqs[0].tok, a, sizeof a),
          "from_ids: %d seqs, %lld tokens", d ? d->n_seq : -1, d ? (long long)d->n_tokens : -1);
    if (d) check_totals(d, "from_ids");
    lm_dataset_free(d);
    d = NULL;
    CHECK_OK(lm_dataset_from_ids(&d, ids, lens, 3, 512, &(lm_data_opts){.seq_len = 16, .max_tokens = 8}, &err), &err);
    CHECK(d && d->n_tokens == 8 && d->n_seq == 2 && d->seqs[1].n == 3, "from_ids max_tokens 8");
    lm_dataset_free(d);
    /* errors */
    d = NULL;
    rc = lm_dataset_from_ids(&d, ids, lens, 3, 6, &o, &err);
    CHECK(rc == LM_EARG && !d && strstr(err.msg, "ids[0][2]"), "id over vocab: rc %d '%s'", rc, err.msg);
    const char *bad[] = {"fine text", "bad \xc3\x28 text"};
    size_t bl[] = {9, 12};
    rc = lm_dataset_from_texts(&d, bad, bl, NULL, NULL, 2, smol, &o, &err);
    CHECK(rc == LM_EENCODING && !d && strstr(err.msg, "texts[1]"), "bad UTF-8 in texts[1]: rc %d '%s'", rc, err.msg);
    rc = lm_dataset_from_text(&d, bad[1], bl[1], smol, &o, &err);
    CHECK(rc == LM_EENCODING && !d && strstr(err.msg, "text"), "bad UTF-8 text: rc %d '%s'", rc, err.msg);
    rc = lm_dataset_from_text(&d, "a", 1, smol, &o, &err);
    CHECK(rc == LM_EARG && !d && strstr(err.msg, "no sequence"), "too short: rc %d '%s'", rc, err.msg);
    rc = lm_dataset_from_texts(&d, bad, bl, NULL, NULL, 0, smol, &o, &err);
    CHECK(rc == LM_EARG && !d, "no texts: rc %d '%s'", rc, err.msg);
    rc = lm_dataset_from_text(&d, STORY, strlen(STORY), smol, &(lm_data_opts){.seq_len = 1}, &err);
    CHECK(rc == LM_EARG && !d, "seq_len 1: rc %d '%s'", rc, err.msg);
    /* allocation failures: LM_ENOMEM, nothing leaked */
    long bad_runs = 0;
    for (long nth = 1; nth < 100000; nth++) {
        lm_fault_arm(nth);
        rc = lm_dataset_from_texts(&d, (const char *const[]){"Once upon a time", STORY}, (const size_t[]){16, strlen(STORY)}, NULL, NULL, 2, stories, &o, &err);
        long hits = lm_fault_hits();
        lm_fault_arm(0);
        lm_dataset_free(d);
        d = NULL;
        if (hits == 0) {
            CHECK(rc == LM_OK, "from_texts without a fault: %s", err.msg);
            break;
        }
        bad_runs += rc != LM_ENOMEM;
    }
    CHECK(bad_runs == 0, "from_texts: %ld fault runs did not give LM_ENOMEM", bad_runs);
}

int main(void) {
    char p[1024];
    lm_err err = {0};
    CHECK_OK(lm_tokenizer_open_json(&stories, model_path(p, sizeof p, "stories260K-hf/tokenizer.json"), &err), &err);
    CHECK_OK(lm_tokenizer_open_json(&smol, model_path(p, sizeof p, "smollm2-135m-tokenizer/tokenizer.json"), &err),
             &err);
    if (!stories || !smol) return TEST_END();
    test_plain();
    test_prefix();
    test_jsonl_text();
    test_jsonl_pc();
    test_errors();
    test_faults();
    test_memory();
    lm_tokenizer_free(stories);
    lm_tokenizer_free(smol);
    return TEST_END();
}

/*
 * test_cli_habits.c -- the layermap command as batch jobs and users of other
 * tools use it (issue 8, sections 3 and 4), end to end on build/layermap:
 * failing before any work, progress lines in a log, checkpoints that are not
 * overwritten, SIGINT/SIGTERM with resume (the default checkpoints are
 * tested in tests/cli/test_ckpt.sh), --opt=value, -m given a model,
 * hub ids from a local Hugging Face cache, --layers, tokenize's decoded text,
 * and the run metadata of JSON output (sha256 checked with sha256sum).
 */
#include "test.h"

#include <cJSON.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *bin(void) {
    const char *b = getenv("LM_BIN");
    return b && *b ? b : "build/layermap";
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Whole file into a malloc'd string (NULL if unreadable). */
static char *slurp(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    return b;
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Occurrences of needle in s. */
static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* 1 when files a and b have the same bytes (both readable). */
static int same_file(const char *a, const char *b) {
    char *x = slurp(a), *y = slurp(b);
    int same = x && y && !strcmp(x, y);
    free(x);
    free(y);
    return same;
}

/* sha256sum of the first n bytes of path (n < 0: all) into hex[65]. */
static int sha256sum(const char *path, long n, char hex[65]) {
    char out[512];
    int rc = n < 0 ? test_run(out, sizeof out, "sha256sum '%s'", path)
                   : test_run(out, sizeof out, "head -c %ld '%s' | sha256sum", n, path);
    if (rc != 0 || strlen(out) < 64) return -1;
    memcpy(hex, out, 64);
    hex[64] = 0;
    return 0;
}

static char out[1 << 17];
static char model[1024], gguf[1024], dir[600];
static const char *data = "data/calib.txt";

/* Section 3: every output checked before the work; an existing file at
 * --checkpoint that is no checkpoint is refused, not overwritten. */
static void test_fail_early(void) {
    char ok[800], ck[800];
    snprintf(ok, sizeof ok, "%s/early.csv", dir);
    int rc = test_run(out, sizeof out, "%s attribute %s --data %s --csv %s -o /proc/x.png", bin(), model, data, ok);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "/proc/x.png") && strstr(out, "cannot create"),
          "-o /proc/x.png: exit 1 and one line: (%d) %s", rc, out);
    CHECK(!exists(ok), "no other output written after an unwritable -o");
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --csv %s --checkpoint /proc/x.ckpt", bin(), model, data,
                  ok);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "/proc/x.ckpt"), "unwritable --checkpoint: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s diff %s %s --json /proc/d.json", bin(), model, model);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "/proc/d.json"), "diff unwritable --json: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s plot tests/../data/calib.txt -o /proc/p.png", bin());
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "/proc/p.png"), "plot unwritable -o before reading: (%d) %s", rc,
          out);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s -o /nonexistent-dir/z.png", bin(), model, data);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "/nonexistent-dir/z.png"), "missing directory: (%d) %s", rc, out);

    /* a file at --checkpoint that is not a checkpoint: refused, kept */
    snprintf(ck, sizeof ck, "%s/exists.ckpt", dir);
    FILE *f = fopen(ck, "wb");
    fputs("not to be lost", f);
    fclose(f);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --max-tokens 64 --checkpoint %s --csv %s", bin(), model,
                  data, ck, ok);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, ck) && strstr(out, "not a layermap checkpoint"),
          "a file at --checkpoint that is no checkpoint: (%d) %s", rc, out);
    char *txt = slurp(ck);
    CHECK(txt && !strcmp(txt, "not to be lost") && !exists(ok), "checkpoint untouched, no output");
    free(txt);
    /* --max-tokens 0 is an error, not "all" */
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --max-tokens 0", bin(), model, data);
    CHECK(rc == 2 && strstr(out, "--max-tokens") && lines(out) == 1, "attribute --max-tokens 0: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s ppl %s %s --max-tokens 0", bin(), model, data);
    CHECK(rc == 2 && strstr(out, "--max-tokens") && lines(out) == 1, "ppl --max-tokens 0: (%d) %s", rc, out);
}

/* Section 3: progress lines into a log, SIGINT and SIGTERM with resume. The
 * long run: fisher over the calibration text twice (29k tokens, 8 s here),
 * one thread, so that it lasts over 1.5 s on a fast host too. */
static void test_long_runs(void) {
    const char *args = "--seq-len 64 --batch 1 -m fisher -t 1 -q";
    char ref[800], cut[800], ck[800], twice[800];
    snprintf(twice, sizeof twice, "%s/calib2.txt", dir);
    char tmp[200];
    const char *data = twice;
    snprintf(ref, sizeof ref, "%s/long-ref.csv", dir);
    snprintf(cut, sizeof cut, "%s/long-cut.csv", dir);
    snprintf(ck, sizeof ck, "%s/long.ckpt", dir);

    /* uninterrupted, with a progress line every second (stderr is a pipe);
     * the data is the calibration text repeated until the run lasts over
     * 2.5 s on this host (2 copies took 1.4 s on a fast one) */
    int rc = 0;
    double secs = 0;
    const char *s = NULL;
    CHECK(test_run(tmp, sizeof tmp, "cat data/calib.txt data/calib.txt > %s", twice) == 0, "make %s", twice);
    for (int copies = 2; copies <= 32; copies *= 2) {
        if (copies > 2)
            CHECK(test_run(tmp, sizeof tmp, "cat %s %s > %s.x && mv %s.x %s", twice, twice, twice, twice, twice) == 0,
                  "make %s", twice);
        rc = test_run(out, sizeof out, "%s attribute %s --data %s %s --csv %s --progress 1", bin(), model, data, args,
                      ref);
        secs = 0;
        s = strstr(out, "predicted, loss");
        if (s && (s = strstr(s, "), "))) secs = atof(s + 3);
        if (rc || secs > 2.5) break;
    }
    CHECK(rc == 0 && exists(ref), "long run: (%d) %s", rc, out);
    int n_prog = count(out, "layermap: fisher: ") - 1; /* minus the summary line */
    CHECK(secs > 1.5, "the long run must last over 1.5 s to test progress and signals (%.2f s)", secs);
    CHECK(n_prog >= 1 && n_prog >= (int)(secs / 1.0) - 2 && n_prog <= (int)(secs / 1.0) + 1,
          "about one progress line a second: %d lines in %.2f s: %s", n_prog, secs, out);
    CHECK(strstr(out, " tok (") && strstr(out, "tok/s, ETA ") && strstr(out, "elapsed"),
          "progress line has done/total, tok/s and ETA: %.300s", out);
    CHECK(!strstr(out, "sgemm"), "no BLAS line without --verbose: %.300s", out);

    /* SIGINT once the work runs (its first progress line): exit 130,
     * checkpoint kept, no output, a resume hint */
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data %s %s --csv %s --checkpoint %s --progress 0.2 2>%s/log & p=$!; "
                  "while kill -0 $p 2>/dev/null && ! grep -q tok/s %s/log; do sleep 0.1; done; kill -INT $p; wait $p; "
                  "echo \"exit=$?\"; cat %s/log",
                  bin(), model, data, args, cut, ck, dir, dir, dir);
    CHECK(strstr(out, "exit=130") && exists(ck) && !exists(cut), "SIGINT: exit 130, checkpoint, no csv: %s", out);
    CHECK(strstr(out, "interrupted") && strstr(out, "run the same command again") && strstr(out, "the sums so far are in"),
          "SIGINT says how to resume: %s", out);
    /* resume: says where it starts, reports this run's rate, ends identical */
    rc = test_run(out, sizeof out, "%s attribute %s --data %s %s --csv %s --checkpoint %s --resume --progress 0", bin(),
                  model, data, args, cut, ck);
    int k = -1, n = -1;
    s = strstr(out, "resuming from ");
    if (s && (s = strstr(s, ": "))) sscanf(s + 2, "%d of %d sequences done", &k, &n);
    CHECK(rc == 0 && k > 0 && k < n && strstr(out, ck), "resume message K of N: (%d) %s", rc, out);
    CHECK(strstr(out, "this run's work only") != NULL, "resumed rate is of this run: %s", out);
    CHECK(!strstr(out, "layermap: fisher: ") || count(out, "layermap: fisher: ") == 1, "--progress 0: no lines");
    CHECK(same_file(ref, cut), "interrupted + resumed CSV equals the uninterrupted one");

    /* SIGTERM: 143; without a checkpoint nothing is kept */
    unlink(cut);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data %s %s --csv %s --no-checkpoint & p=$!; sleep 1; kill -TERM $p; wait $p; "
                  "echo \"exit=$?\"",
                  bin(), model, data, args, cut);
    CHECK(strstr(out, "exit=143") && !exists(cut) && strstr(out, "nothing kept"), "SIGTERM: 143: %s", out);
    /* a second signal exits at once */
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data %s %s --csv %s --no-checkpoint & p=$!; sleep 1; kill -INT $p; kill -INT $p; "
                  "wait $p; echo \"exit=$?\"",
                  bin(), model, data, args, cut);
    CHECK(strstr(out, "exit=130") && !exists(cut), "second SIGINT: 130: %s", out);
}

/* Section 4: --opt=value, -t, -v, -m given a model, method names. */
static void test_options(void) {
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/opt-a.csv", dir);
    snprintf(b, sizeof b, "%s/opt-b.csv", dir);
    int rc = test_run(out, sizeof out,
                      "%s attribute %s --data %s --seq-len 64 --max-tokens 256 --method fisher "
                      "--threads 1 --csv %s -q",
                      bin(), model, data, a);
    CHECK(rc == 0, "--opt value: %s", out);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data=%s --seq-len=64 --max-tokens=256 --method=fisher -t 1 "
                  "--csv=%s -q -v",
                  bin(), model, data, b);
    CHECK(rc == 0 && same_file(a, b), "--opt=value and -t give the same matrix: %s", out);
    CHECK(strstr(out, "sgemm") != NULL, "-v prints the BLAS kernel: %s", out);
    rc = test_run(out, sizeof out, "%s ppl %s --file=%s --max-tokens=300 --seq-len=64", bin(), model, data);
    char ppl_eq[64] = "";
    const char *p = strstr(out, "perplexity ");
    if (p) snprintf(ppl_eq, sizeof ppl_eq, "%.20s", p);
    rc |= test_run(out, sizeof out, "%s ppl %s -f %s --max-tokens 300 --seq-len 64", bin(), model, data);
    CHECK(rc == 0 && ppl_eq[0] && strstr(out, ppl_eq), "ppl -f FILE and --file=FILE: %s / %s", ppl_eq, out);
    rc = test_run(out, sizeof out, "%s ppl %s %s --max-tokens 300 --seq-len 64", bin(), model, data);
    CHECK(rc == 0 && ppl_eq[0] && strstr(out, ppl_eq), "ppl MODEL FILE still works: %s", out);

    /* -m MODEL */
    rc = test_run(out, sizeof out, "%s attribute -m %s --data %s", bin(), model, data);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "-m takes a method; MODEL comes first"), "-m DIR: (%d) %s", rc,
          out);
    rc = test_run(out, sizeof out, "%s attribute %s -m Some-Model.Q4_K_M.gguf --data %s", bin(), model, data);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "-m takes a method"), "-m X.gguf (absent): (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s diff %s -m %s %s", bin(), model, model, model);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "-m takes a metric"), "diff -m MODEL: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s attribute %s -m no-such --data %s", bin(), model, data);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "no-such") && strstr(out, "grad-weight") && strstr(out, "ablate-mean") &&
              strstr(out, "act-stats"),
          "unknown method lists the methods: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --progress=-1", bin(), model, data);
    CHECK(rc == 2 && strstr(out, "--progress"), "--progress -1: %s", out);
}

/* --compute: names, the refusal where bf16 cannot run, the meta, the ppl/generate combinations. */
static void test_compute(void) {
    char j[800];
    snprintf(j, sizeof j, "%s/compute.json", dir);
    int rc = test_run(out, sizeof out, "%s attribute %s --data %s --compute fp16", bin(), gguf, data);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "--compute") && strstr(out, "bf16-ref"), "--compute fp16: (%d) %s",
          rc, out);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data %s --seq-len 64 --max-tokens 128 -t 1 --compute bf16-ref -q -v "
                  "-o %s",
                  bin(), gguf, data, j);
    CHECK(rc == 0 && strstr(out, "products in bf16-ref"), "--compute bf16-ref -v: (%d) %s", rc, out);
    char *t = slurp(j);
    CHECK(t && strstr(t, "\"compute\":\"bf16-ref\""), "the JSON meta names the compute: %.300s", t ? t : "(none)");
    free(t);
    int hw = lm_compute_bf16_available();
    rc = test_run(out, sizeof out, "%s ppl %s %s --max-tokens 128 --seq-len 64 --compute bf16", bin(), gguf, data);
    if (hw)
        CHECK(rc == 0 && strstr(out, "perplexity"), "ppl --compute bf16 on a bf16 CPU: (%d) %s", rc, out);
    else
        CHECK(rc == 1 && lines(out) == 1 && strstr(out, "bf16"), "ppl --compute bf16 without bf16: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s ppl %s %s --max-tokens 128 --seq-len 64 --compute auto", bin(), gguf, data);
    CHECK(rc == 0 && (hw ? !strstr(out, "computing in f32") : strstr(out, "computing in f32") != NULL),
          "--compute auto (bf16 here: %d): %s", hw, out);
    rc = test_run(out, sizeof out, "%s ppl %s %s --compute bf16-ref --llamacpp-arith", bin(), gguf, data);
    CHECK(rc == 2 && lines(out) == 1 && strstr(out, "--compute f32"), "--llamacpp-arith with bf16: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s generate %s 'Once upon' -n 4 --compute bf16-ref", bin(), gguf);
    CHECK(rc == 0, "generate --compute bf16-ref: (%d) %s", rc, out);
}

/* Section 4: hub ids from a cache built here in huggingface_hub's layout
 * (snapshot files are symlinks into blobs/). */
static void test_hub(void) {
    char cache[800];
    snprintf(cache, sizeof cache, "%s/hf/hub", dir);
    int rc =
        test_run(out, sizeof out,
                 "set -e; r=%s/models--tiny-org--Stories-260K; mkdir -p $r/blobs $r/refs $r/snapshots/0123abcd; "
                 "for f in config.json model.safetensors tokenizer.json; do cp %s/$f $r/blobs/b-$f; "
                 "ln -s ../../blobs/b-$f $r/snapshots/0123abcd/$f; done; printf 0123abcd > $r/refs/main; "
                 "mkdir -p $r/snapshots/feedbeef; ln -s ../../blobs/b-config.json $r/snapshots/feedbeef/config.json; "
                 "ln -s ../../blobs/b-model.safetensors $r/snapshots/feedbeef/model.safetensors",
                 cache, model);
    CHECK(rc == 0, "build the cache: %s", out);
    rc = test_run(out, sizeof out, "HF_HUB_CACHE=%s %s inspect tiny-org/Stories-260K", cache, bin());
    CHECK(rc == 0 && strstr(out, "llama") && strstr(out, "attn.q"), "inspect ORG/NAME from $HF_HUB_CACHE: %s", out);
    rc = test_run(out, sizeof out, "HF_HUB_CACHE= HF_HOME=%s/hf %s tokenize tiny-org/Stories-260K 'Once upon' --ids",
                  dir, bin());
    CHECK(rc == 0 && strstr(out, "1 403 407"), "tokenize ORG/NAME from $HF_HOME/hub: %s", out);
    rc = test_run(out, sizeof out,
                  "HF_HUB_CACHE= HF_HOME= HOME=%s/home %s tokenize tiny-org/Stories-260K x; mkdir -p "
                  "%s/home/.cache/huggingface && ln -sfn %s %s/home/.cache/huggingface/hub && HF_HUB_CACHE= HF_HOME= "
                  "HOME=%s/home %s tokenize tiny-org/Stories-260K 'Once upon' --ids",
                  dir, bin(), dir, cache, dir, dir, bin());
    CHECK(strstr(out, "1 403 407") != NULL, "ORG/NAME from ~/.cache/huggingface/hub: %s", out);
    rc = test_run(out, sizeof out,
                  "HF_HUB_CACHE=%s %s attribute tiny-org/Stories-260K --revision=feedbeef --data %s "
                  "--max-tokens 64 --seq-len 32 -q",
                  cache, bin(), data);
    CHECK(rc == 1 && strstr(out, "feedbeef") && strstr(out, "tokenizer"),
          "--revision HASH picks that snapshot (it has no tokenizer): (%d) %s", rc, out);
    rc =
        test_run(out, sizeof out, "HF_HUB_CACHE=%s %s inspect tiny-org/Stories-260K --revision feedbeef", cache, bin());
    CHECK(rc == 0 && strstr(out, "llama"), "inspect --revision HASH: %s", out);
    rc = test_run(out, sizeof out, "HF_HUB_CACHE=%s %s inspect tiny-org/Stories-260K --revision v9", cache, bin());
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "refs/v9") && strstr(out, "snapshots/v9") &&
              strstr(out, "network"),
          "unknown revision names the paths looked at: %s", out);
    rc = test_run(out, sizeof out, "HF_HUB_CACHE=%s %s inspect nobody/none", cache, bin());
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "models--nobody--none/refs/main"),
          "not cached: one line naming the paths: %s", out);
    char j[800];
    snprintf(j, sizeof j, "%s/hub.json", dir);
    rc = test_run(out, sizeof out,
                  "HF_HUB_CACHE=%s %s attribute tiny-org/Stories-260K --data %s --max-tokens 64 "
                  "--seq-len 32 -q --json %s",
                  cache, bin(), data, j);
    char *t = slurp(j);
    CHECK(rc == 0 && t && strstr(t, "\"model\": \"Stories-260K\"") && strstr(t, "snapshots/0123abcd"),
          "attribute from a hub id; titled by the repository name: %.300s", t ? t : out);
    free(t);
}

/* Section 4: --layers rows, for attribute, diff and plot. */
static void test_layers(void) {
    char full[800], sel[800], sj[800], dfull[800], dsel[800];
    snprintf(full, sizeof full, "%s/lay-full.csv", dir);
    snprintf(sel, sizeof sel, "%s/lay-sel.csv", dir);
    snprintf(sj, sizeof sj, "%s/lay-sel.json", dir);
    const char *args = "--seq-len 64 --max-tokens 256 -m grad-weight -q";
    int rc = test_run(out, sizeof out, "%s attribute %s --data %s %s --csv %s", bin(), model, data, args, full);
    rc |= test_run(out, sizeof out, "%s attribute %s --data %s %s --layers 1,3-4 --csv %s --json %s", bin(), model,
                   data, args, sel, sj);
    CHECK(rc == 0, "attribute --layers: %s", out);
    char *f = slurp(full), *s = slurp(sel), *j = slurp(sj);
    /* the selected CSV is the header and rows 1, 3, 4 of the full one */
    char want[8192] = "";
    if (f) {
        const char *line = f;
        int row = -1;
        while (*line) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
            if (row == -1 || row == 1 || row == 3 || row == 4) strncat(want, line, len);
            row++;
            line += len;
        }
    }
    CHECK(s && !strcmp(s, want), "attribute --layers 1,3-4 rows:\n%s\nwant:\n%s", s ? s : "", want);
    CHECK(j && strstr(j, "\"layers\": 3") && strstr(j, "\"layer_index\": [1, 3, 4]"), "json rows: %.500s", j ? j : "");
    free(f), free(s), free(j);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s %s --layers 2-9", bin(), model, data, args);
    CHECK(rc == 1 && strstr(out, "0-4"), "--layers past the model: (%d) %s", rc, out);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s %s --layers 3-1", bin(), model, data, args);
    CHECK(rc == 2 && strstr(out, "--layers"), "bad --layers: (%d) %s", rc, out);

    char ft[1024];
    model_path(ft, sizeof ft, "stories260K-ft-hf");
    snprintf(dfull, sizeof dfull, "%s/d-full.csv", dir);
    snprintf(dsel, sizeof dsel, "%s/d-sel.csv", dir);
    rc = test_run(out, sizeof out, "%s diff %s %s -m all --csv %s -q && %s diff %s %s -m all --layers=4 --csv %s -q",
                  bin(), model, ft, dfull, bin(), model, ft, dsel);
    char p1[900], p2[900];
    snprintf(p1, sizeof p1, "%s/d-full-rel.csv", dir);
    snprintf(p2, sizeof p2, "%s/d-sel-rel.csv", dir);
    f = slurp(p1), s = slurp(p2);
    const char *last = f ? strstr(f, "\n4,") : NULL;
    CHECK(rc == 0 && s && last && lines(s) == 2 && !strcmp(strchr(s, '\n'), last),
          "diff --layers=4: only layer 4's row: %s", s ? s : out);
    free(f), free(s);
    snprintf(p1, sizeof p1, "%s/plot-sel.csv", dir);
    rc = test_run(out, sizeof out, "%s plot %s --layers 3,4 --csv %s -q", bin(), sj, p1);
    s = slurp(p1);
    CHECK(rc == 0 && s && lines(s) == 3 && strstr(s, "\n3,") && strstr(s, "\n4,") && !strstr(s, "\n1,"),
          "plot --layers selects rows by layer number: %s", s ? s : out);
    free(s);
}

/* Section 4: tokenize prints each token's text. */
static void test_tokenize(void) {
    int rc = test_run(out, sizeof out, "%s tokenize %s 'Once upon a time'", bin(), model);
    CHECK(rc == 0 && strstr(out, "     1 -> '<s>'\n   403 -> ' Once'\n   407 -> ' upon'\n   261 -> ' a'\n"),
          "decoded text per token: %s", out);
    rc = test_run(out, sizeof out, "%s tokenize %s 'Once upon' --raw", bin(), model);
    CHECK(rc == 0 && strstr(out, "1\t<s>\n403\t\xe2\x96\x81Once\n"), "--raw pieces: %s", out);
}

/* The "meta" object of a JSON file: present, with the keys, and sha256s that
 * sha256sum agrees with. */
static void check_meta(const char *json_path, const char *model_file, int gguf_model) {
    char *t = slurp(json_path);
    cJSON *root = t ? cJSON_Parse(t) : NULL;
    cJSON *meta = root ? cJSON_GetObjectItem(root, "meta") : NULL;
    CHECK(cJSON_IsObject(meta), "%s has a meta object", json_path);
    free(t);
    if (!cJSON_IsObject(meta)) {
        cJSON_Delete(root);
        return;
    }
    static const char *keys[] = {"layermap_version", "command_line", "model", "data", "tokens", "predicted_tokens",
                                 "loss", "ppl", "seconds", "threads", "blas_kernel", "options"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECK(cJSON_GetObjectItem(meta, keys[i]) != NULL, "meta.%s in %s", keys[i], json_path);
    cJSON *v = cJSON_GetObjectItem(meta, "layermap_version");
    CHECK(cJSON_IsString(v) && !strcmp(v->valuestring, LM_VERSION), "meta version");
    v = cJSON_GetObjectItem(meta, "threads");
    CHECK(cJSON_IsNumber(v) && v->valuedouble == 1, "meta threads = 1");
    v = cJSON_GetObjectItem(meta, "blas_kernel");
    CHECK(cJSON_IsString(v) && strstr(v->valuestring, "sgemm"), "meta blas_kernel");
    v = cJSON_GetObjectItem(meta, "command_line");
    CHECK(cJSON_IsString(v) && strstr(v->valuestring, "attribute") && strstr(v->valuestring, "--max-tokens 256"),
          "meta command_line: %s", cJSON_IsString(v) ? v->valuestring : "");
    cJSON *ppl = cJSON_GetObjectItem(meta, "ppl"), *loss = cJSON_GetObjectItem(meta, "loss");
    CHECK(cJSON_IsNumber(ppl) && cJSON_IsNumber(loss) && fabs(ppl->valuedouble - exp(loss->valuedouble)) < 1e-9 * ppl->valuedouble,
          "meta ppl = exp(loss)");
    v = cJSON_GetObjectItem(meta, "tokens");
    CHECK(cJSON_IsNumber(v) && v->valuedouble == 256, "meta tokens 256");
    char hex[65];
    cJSON *d = cJSON_GetObjectItem(meta, "data");
    cJSON *dh = d ? cJSON_GetObjectItem(d, "sha256") : NULL;
    CHECK(sha256sum(data, -1, hex) == 0 && cJSON_IsString(dh) && !strcmp(dh->valuestring, hex),
          "data sha256 = sha256sum (%s)", hex);
    cJSON *files = cJSON_GetObjectItem(cJSON_GetObjectItem(meta, "model"), "files");
    int checked = 0;
    for (cJSON *f = files ? files->child : NULL; f; f = f->next) {
        const char *name = cJSON_GetObjectItem(f, "name")->valuestring;
        cJSON *hb = cJSON_GetObjectItem(f, "header_bytes"), *hs = cJSON_GetObjectItem(f, "header_sha256");
        cJSON *ws = cJSON_GetObjectItem(f, "sha256");
        char path[1200];
        if (gguf_model)
            snprintf(path, sizeof path, "%s", model_file);
        else
            snprintf(path, sizeof path, "%s/%s", model_file, name);
        if (hb && hs) {
            long n = (long)hb->valuedouble;
            struct stat st;
            CHECK(stat(path, &st) == 0 && n > 8 && n < st.st_size, "%s: header of %ld bytes inside the file", name, n);
            if (gguf_model) CHECK(n % 32 == 0, "gguf header ends at the aligned data section (%ld)", n);
            CHECK(sha256sum(path, n, hex) == 0 && !strcmp(hs->valuestring, hex), "%s header sha256 = %s", name, hex);
            checked++;
        } else if (ws) {
            CHECK(sha256sum(path, -1, hex) == 0 && !strcmp(ws->valuestring, hex), "%s sha256 = %s", name, hex);
            checked++;
        }
    }
    CHECK(checked == (gguf_model ? 1 : 2), "model files hashed: %d", checked);
    cJSON_Delete(root);
}

static void test_meta(void) {
    char j[800];
    snprintf(j, sizeof j, "%s/meta-hf.json", dir);
    int rc = test_run(out, sizeof out, "%s attribute %s --data %s --seq-len 64 --max-tokens 256 -t 1 -q --json %s",
                      bin(), model, data, j);
    CHECK(rc == 0, "attribute --json: %s", out);
    check_meta(j, model, 0);
    snprintf(j, sizeof j, "%s/meta-gguf.json", dir);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --seq-len 64 --max-tokens 256 -t 1 -q --json %s", bin(),
                  gguf, data, j);
    CHECK(rc == 0, "attribute gguf --json: %s", out);
    check_meta(j, gguf, 1);
    /* diff: both models, each identified by its header */
    char ft[1024], dj[800];
    model_path(ft, sizeof ft, "stories260K-ft.gguf");
    snprintf(dj, sizeof dj, "%s/meta-diff.json", dir);
    rc = test_run(out, sizeof out, "%s diff %s %s --json %s -q -t 1", bin(), gguf, ft, dj);
    char *dt = slurp(dj);
    cJSON *droot = dt ? cJSON_Parse(dt) : NULL, *dmeta = droot ? cJSON_GetObjectItem(droot, "meta") : NULL;
    cJSON *fm = dmeta ? cJSON_GetObjectItem(dmeta, "finetuned") : NULL;
    cJSON *ff = fm ? cJSON_GetObjectItem(fm, "files") : NULL;
    cJSON *fh = ff && ff->child ? cJSON_GetObjectItem(ff->child, "header_sha256") : NULL;
    cJSON *fb = ff && ff->child ? cJSON_GetObjectItem(ff->child, "header_bytes") : NULL;
    char hex[65] = "";
    CHECK(rc == 0 && cJSON_IsString(fh) && cJSON_IsNumber(fb) &&
              sha256sum(ft, (long)fb->valuedouble, hex) == 0 && !strcmp(fh->valuestring, hex) &&
              cJSON_GetObjectItem(dmeta, "model") && cJSON_GetObjectItem(dmeta, "options"),
          "diff meta: model, finetuned header sha256 (%s), options: %.300s", hex, dt ? dt : out);
    cJSON_Delete(droot);
    free(dt);
    /* the file re-plots; plot keeps the meta */
    char j2[800];
    snprintf(j2, sizeof j2, "%s/meta-replot.json", dir);
    rc = test_run(out, sizeof out, "%s plot %s --json %s -q", bin(), j, j2);
    char *t = slurp(j2);
    CHECK(rc == 0 && t && strstr(t, "\"meta\": {\"layermap_version\""), "plot keeps meta: %.200s", t ? t : out);
    free(t);
}

/* Section 3: a method blind on the architecture says so (gemma 3 has q/k
 * norms and post norms); said before the data is read. */
static void test_blind(void) {
    char g[1024];
    const char *c = getenv("LAYERMAP_CACHE");
    if (c && *c)
        snprintf(g, sizeof g, "%s/gemma-3-270m-q4_k_m.gguf", c);
    else
        snprintf(g, sizeof g, "%s/.cache/layermap/gemma-3-270m-q4_k_m.gguf", getenv("HOME") ? getenv("HOME") : "/root");
    if (!exists(g)) {
        const char *req = getenv("LM_REQUIRE_REAL");
        printf("%s missing: blind-method warning not tested\n", g);
        CHECK(!(req && *req == '1'), "%s missing and LM_REQUIRE_REAL=1", g);
        return;
    }
    int rc = test_run(out, sizeof out, "%s attribute %s --data /nonexistent.txt -m act-grad", bin(), g);
    CHECK(rc == 1 && count(out, "blind by construction") == 1 && strstr(out, "attn.q, attn.k") &&
              strstr(out, "attn.o, mlp.down"),
          "act-grad on gemma3 warns: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data /nonexistent.txt -m ig", bin(), g);
    CHECK(count(out, "blind by construction") == 1, "ig on gemma3 warns: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data /nonexistent.txt -m grad-weight", bin(), g);
    CHECK(!strstr(out, "blind"), "grad-weight does not warn: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data /nonexistent.txt -m act-grad", bin(), model);
    CHECK(!strstr(out, "blind"), "act-grad on llama does not warn: %s", out);
}

int main(void) {
    if (!exists(bin())) {
        printf("%s missing: build it first\n", bin());
        CHECK(0, "no binary");
        return TEST_END();
    }
    snprintf(dir, sizeof dir, "%s", scratch_dir());
    char cache[700]; /* attribute runs without an output file checkpoint there: not in $HOME */
    snprintf(cache, sizeof cache, "%s/cache", dir);
    setenv("XDG_CACHE_HOME", cache, 1);
    model_path(model, sizeof model, "stories260K-hf");
    model_path(gguf, sizeof gguf, "stories260K.gguf");
    test_fail_early();
    test_options();
    test_compute();
    test_tokenize();
    test_hub();
    test_layers();
    test_meta();
    test_blind();
    test_long_runs();
    char o2[200];
    int rc = test_run(o2, sizeof o2, "ls %s | grep -c '\\.tmp\\.'", dir);
    CHECK(rc != 0 || atoi(o2) == 0, "temp files left in %s", dir);
    return TEST_END();
}

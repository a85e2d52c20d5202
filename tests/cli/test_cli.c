/*
 * test_cli.c -- the layermap command end to end: attribute, ppl, generate,
 * tokenize, inspect, and what the user sees on bad input (one line naming the
 * file, non-zero exit, no output file left behind).
 */
#include "test.h"

#include <dirent.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* The binary under test: $LM_BIN (the Makefile sets it), else build/layermap. */
static const char *bin(void) {
    const char *b = getenv("LM_BIN");
    return b && *b ? b : "build/layermap";
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Lines in a file. */
static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* No "*.tmp.*" left in dir. */
static int no_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 1;
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) ok = 0;
    closedir(d);
    return ok;
}

static char *read_file(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

int main(void) {
    if (!file_exists(bin())) {
        printf("%s missing: build it first\n", bin());
        CHECK(0, "no binary");
        return TEST_END();
    }
    char out[1 << 16], model[1024], p1[1024], p2[1024];
    const char *dir = scratch_dir();
    char cache[1100]; /* attribute runs without an output file checkpoint there: not in $HOME */
    snprintf(cache, sizeof cache, "%s/cache", dir);
    setenv("XDG_CACHE_HOME", cache, 1);
    model_path(model, sizeof model, "stories260K-hf");

    /* --version names the kernel */
    int rc = test_run(out, sizeof out, "%s --version", bin());
    CHECK(rc == 0 && strstr(out, "sgemm"), "--version: %s", out);

    /* greedy story from BOS */
    rc = test_run(out, sizeof out, "%s generate %s -n 30", bin(), model);
    CHECK(rc == 0 && strstr(out, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park"),
          "generate: %s", out);

    /* tokenize */
    rc = test_run(out, sizeof out, "%s tokenize %s 'Once upon a time' --ids", bin(), model);
    CHECK(rc == 0 && strstr(out, "1 403 407 261 378"), "tokenize: %s", out);

    /* inspect */
    rc = test_run(out, sizeof out, "%s inspect %s", bin(), model);
    CHECK(rc == 0 && strstr(out, "llama") && strstr(out, "attn.q"), "inspect: %.300s", out);

    /* ppl */
    rc = test_run(out, sizeof out, "%s ppl %s data/calib.txt --seq-len 128 --max-tokens 1024", bin(), model);
    CHECK(rc == 0 && strstr(out, "perplexity"), "ppl: %s", out);

    /* attribute: csv, json, png; checkpoint + resume gives the same matrix */
    snprintf(p1, sizeof p1, "%s/a.csv", dir);
    snprintf(p2, sizeof p2, "%s/a.ckpt", dir);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt --seq-len 64 --max-tokens 512 --batch 3 -m fisher --csv %s "
                  "-o %s/a.png --json %s/a.json --checkpoint %s -q",
                  bin(), model, p1, dir, dir, p2);
    CHECK(rc == 0, "attribute: %s", out);
    CHECK(count_lines(p1) == 6, "a.csv should have header + 5 layers: %d", count_lines(p1));
    char csv1[8192] = "";
    if (read_file(p1)) snprintf(csv1, sizeof csv1, "%s", read_file(p1));
    char p3[1024];
    snprintf(p3, sizeof p3, "%s/b.csv", dir);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt --seq-len 64 --max-tokens 512 --batch 3 -m fisher --csv %s "
                  "--checkpoint %s --resume -q",
                  bin(), model, p3, p2);
    CHECK(rc == 0 && read_file(p3) && !strcmp(read_file(p3), csv1), "resume from a finished checkpoint: %s", out);
    /* a checkpoint of another method is refused with the file's name */
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt --seq-len 64 --max-tokens 512 -m ablate "
                  "--checkpoint %s --resume -q",
                  bin(), model, p2);
    CHECK(rc != 0 && strstr(out, "a.ckpt"), "foreign checkpoint: %s", out);

    /* several methods from one pass: {method} names each file, one .json holds
     * every matrix (plot reads each back), each equal to its own run */
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt --seq-len 64 --max-tokens 512 --batch 3 -m grad-weight,fisher "
                  "--csv %s/m-{method}.csv --json %s/m.json -q",
                  bin(), model, dir, dir);
    snprintf(p1, sizeof p1, "%s/m-fisher.csv", dir);
    snprintf(p2, sizeof p2, "%s/m-grad-weight.csv", dir);
    CHECK(rc == 0 && file_exists(p2) && read_file(p1) && !strcmp(read_file(p1), csv1),
          "-m grad-weight,fisher: fisher's file equals the fisher run: %s", out);
    rc = test_run(out, sizeof out, "%s plot %s/m.json -o %s/mp.png -q", bin(), dir, dir);
    snprintf(p1, sizeof p1, "%s/mp-m-fisher.png", dir);
    snprintf(p2, sizeof p2, "%s/mp-m-grad-weight.png", dir);
    CHECK(rc == 0 && file_exists(p1) && file_exists(p2), "plot of a several-matrix .json: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m grad-weight,fisher -o %s/n.png", bin(),
                  model, dir);
    CHECK(rc == 2 && strstr(out, "{method}") && strstr(out, "n.png"), "several methods, one image: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m grad-weight -m fisher", bin(), model);
    CHECK(rc == 2 && strstr(out, "-m given twice"), "-m twice: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m fisher,fisher", bin(), model);
    CHECK(rc == 2 && strstr(out, "twice"), "a method twice in the list: %s", out);

    /* act-stats writes both matrices */
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt --seq-len 64 --max-tokens 256 -m act-stats --csv %s/s.csv -q",
                  bin(), model, dir);
    snprintf(p1, sizeof p1, "%s/s-act-sq.csv", dir);
    snprintf(p2, sizeof p2, "%s/s-wanda.csv", dir);
    CHECK(rc == 0 && file_exists(p1) && file_exists(p2), "act-stats outputs: %s", out);
    CHECK(strstr(out, "block influence") != NULL, "act-stats prints block influence: %s", out);

    /* bad inputs: one line naming the file, non-zero exit, no output */
    rc = test_run(out, sizeof out, "%s attribute /nonexistent/model --data data/calib.txt --csv %s/x.csv", bin(), dir);
    CHECK(rc != 0 && strstr(out, "/nonexistent/model"), "missing model: %s", out);
    snprintf(p1, sizeof p1, "%s/bad.txt", dir);
    FILE *f = fopen(p1, "wb");
    fputs("hello \xff\xfe world", f);
    fclose(f);
    rc = test_run(out, sizeof out, "%s attribute %s --data %s --csv %s/y.csv", bin(), model, p1, dir);
    CHECK(rc != 0 && strstr(out, "bad.txt") && strchr(out, '\n') == strrchr(out, '\n'), "invalid UTF-8: %s", out);
    snprintf(p2, sizeof p2, "%s/y.csv", dir);
    CHECK(!file_exists(p2), "no output after a failure");
    snprintf(p1, sizeof p1, "%s/trunc", dir);
    mkdir(p1, 0755);
    rc = test_run(out, sizeof out, "cp %s/config.json %s/ && head -c 5000 %s/model.safetensors > %s/model.safetensors",
                  model, p1, model, p1);
    rc = test_run(out, sizeof out, "%s inspect %s", bin(), p1);
    CHECK(rc != 0 && strstr(out, "model.safetensors"), "truncated model: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt --max-tokens 64 -o /nonexistent-dir/z.png",
                  bin(), model);
    CHECK(rc != 0 && strstr(out, "/nonexistent-dir/z.png"), "unwritable output: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m no-such-method", bin(), model);
    CHECK(rc != 0 && strstr(out, "no-such-method"), "unknown method: %s", out);

    /* --imatrix: written with act-stats (GGUF magic, llama.cpp's chunk count in
     * the message); refused without act-sq/wanda, with a --seq-len that is not
     * the chunk, for JSONL under --imatrix-chunk, and unwritable before any work */
    snprintf(p1, sizeof p1, "%s/im.gguf", dir);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt -m grad-weight,act-stats --imatrix-chunk 64 "
                  "--max-tokens 700 --imatrix %s --csv %s/im-{method}.csv",
                  bin(), model, p1, dir);
    const char *im = read_file(p1);
    CHECK(rc == 0 && im && !memcmp(im, "GGUF", 4) && strstr(out, "10 chunks of 64 tokens, llama-imatrix's chunks"),
          "--imatrix: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m fisher --imatrix %s/x.gguf", bin(), model,
                  dir);
    CHECK(rc == 2 && strstr(out, "--imatrix needs act-sq"), "--imatrix without act-sq: %s", out);
    rc = test_run(out, sizeof out, "%s attribute %s --data data/calib.txt -m act-sq --imatrix-chunk 64 --seq-len 128",
                  bin(), model);
    CHECK(rc == 2 && strstr(out, "--imatrix-chunk 64"), "--seq-len vs --imatrix-chunk: %s", out);
    snprintf(p2, sizeof p2, "%s/t.jsonl", dir);
    rc = test_run(out, sizeof out,
                  "echo '{\"text\": \"Once upon a time\"}' > %s && %s attribute %s --data %s -m act-sq "
                  "--imatrix-chunk 8 --imatrix %s/j.gguf",
                  p2, bin(), model, p2, dir);
    CHECK(rc == 1 && strstr(out, "t.jsonl") && strstr(out, "JSONL"), "JSONL with --imatrix-chunk: %s", out);
    rc = test_run(out, sizeof out,
                  "%s attribute %s --data data/calib.txt -m act-stats --imatrix /nonexistent-dir/i.gguf", bin(), model);
    CHECK(rc == 1 && strstr(out, "/nonexistent-dir/i.gguf") && !strstr(out, "tokens/s"), "unwritable --imatrix: %s",
          out);
    CHECK(no_temp_files(dir), "temp files left in %s", dir);
    return TEST_END();
}

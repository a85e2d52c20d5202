/*
 * cmd_tokenize.c -- `layermap tokenize MODEL [TEXT | -f FILE] [--no-bos] [--ids] [--raw]`:
 * the tokens of a text, one "id -> 'text'" line per token (as llama.cpp's
 * tokenizer tool prints them), or with --raw "id<TAB>piece" as the vocabulary
 * stores it.
 */
#include "cli.h"
#include "base/utf8.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Print the command's help. */
static void usage(FILE *f) {
    fprintf(f,
            "usage: layermap tokenize MODEL [TEXT | -f FILE] [--no-bos] [--ids] [--raw]\n\n"
            "Tokenize TEXT (or FILE, or standard input when neither is given; -f - is stdin too)\n"
            "with the tokenizer of MODEL and print one line per token: id -> 'its text' (the token\n"
            "decoded alone; control characters, backslashes and bytes of an incomplete UTF-8\n"
            "character escaped as \\n, \\t, \\xHH, \\\\).\n\n"
            "MODEL  a .gguf file, an HF model directory, or a tokenizer.json (or a directory holding\n"
            "       only a tokenizer.json), or a hub id ORG/NAME in the local HF cache (--revision R)\n"
            "  --no-bos   do not add BOS (by default BOS is added when the model says so)\n"
            "  --ids      print only the ids, space-separated on one line\n"
            "  --raw      id, a tab, and the piece as the vocabulary stores it (\"\u2581the\", \"<0x0A>\")\n"
            "  -f FILE    read the text from FILE\n");
}

/* Read a whole stream into a malloc'd buffer; NULL on error. */
static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

/* Print a piece with control characters, backslashes and bytes that are not
 * UTF-8 escaped. */
static void print_piece(const char *p) {
    const unsigned char *s = (const unsigned char *)p;
    size_t n = strlen(p);
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = lm_utf8_char(p + i, n - i);
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f || l == 0) printf("\\x%02X", c);
        else {
            fwrite(s + i, 1, l, stdout);
            i += l;
            continue;
        }
        i++;
    }
}

/* Open the tokenizer of MODEL: a tokenizer.json, a directory with only a
 * tokenizer.json, or a model (.gguf / HF directory). */
static int open_tokenizer(const char *path, lm_tokenizer **tok, lm_model **m, lm_err *err) {
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) return lm_tokenizer_open_json(tok, path, err);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        char cfg[4096], tj[4096];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
        struct stat s2;
        if (stat(cfg, &s2) != 0 && stat(tj, &s2) == 0) return lm_tokenizer_open_json(tok, tj, err);
    }
    int rc = lm_model_open(m, path, err);
    if (!rc) rc = lm_tokenizer_open(tok, *m, err);
    return rc;
}

/* The tokenize command. */
int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int add_bos = -1, ids_only = 0, raw = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-bos")) {
            add_bos = 0;
        } else if (!strcmp(a, "--ids")) {
            ids_only = 1;
        } else if (!strcmp(a, "--raw")) {
            raw = 1;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (i + 1 >= argc) {
                cli_errorf("tokenize: %s needs a file name", a);
                return 2;
            }
            file = argv[++i];
        } else if (a[0] == '-' && a[1] && !(a[1] == '-' && !a[2])) {
            cli_errorf("tokenize: unknown option '%s' (see --help)", a);
            return 2;
        } else if (!model) {
            model = a;
        } else if (!text && !file) {
            text = a;
        } else {
            cli_errorf("tokenize: unexpected argument '%s' (quote the text, or use -f FILE)", a);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    if (text && file) {
        cli_errorf("tokenize: give either TEXT or -f FILE, not both");
        return 2;
    }
    char *buf = NULL;
    size_t len = 0;
    if (text) {
        len = strlen(text);
    } else {
        FILE *f = !file || !strcmp(file, "-") ? stdin : fopen(file, "rb");
        if (!f) return cli_errorf("%s: %s", file, strerror(errno));
        buf = read_stream(f, &len);
        if (f != stdin) fclose(f);
        if (!buf) return cli_errorf("%s: cannot read", file ? file : "(stdin)");
        text = buf;
    }
    lm_err err = {0};
    lm_model *m = NULL;
    lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    char hub_path[4096], hub_name[256];
    if (cli_resolve_model(&model, hub_path, sizeof hub_path, hub_name, sizeof hub_name)) goto done;
    if (open_tokenizer(model, &tok, &m, &err)) {
        cli_error(&err);
        goto done;
    }
    if (lm_tokenize(tok, text, len, add_bos, &ids, &n, &err)) {
        cli_errorf("%s: %s", file ? file : text == buf ? "(stdin)" : "TEXT", err.msg);
        goto done;
    }
    if (ids_only) {
        for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
        putchar('\n');
    } else if (raw) {
        for (int i = 0; i < n; i++) {
            printf("%d\t", (int)ids[i]);
            print_piece(lm_token_piece(tok, ids[i]));
            putchar('\n');
        }
    } else {
        /* Each token is decoded after a fixed one ("a"), and that one's text
         * removed: a decoder drops the leading space of a whole text
         * (SentencePiece), which would hide the space that starts " upon". */
        int32_t *pre = NULL, pair[2];
        int npre = 0;
        char *ptxt = NULL;
        if (lm_tokenize(tok, "a", 1, 0, &pre, &npre, &err) || npre < 1 ||
            lm_detokenize(tok, &pre[npre - 1], 1, &ptxt, &err)) {
            npre = 0;
        }
        size_t plen = ptxt ? strlen(ptxt) : 0;
        for (int i = 0; i < n; i++) {
            char *txt = NULL;
            pair[0] = npre ? pre[npre - 1] : ids[i];
            pair[1] = ids[i];
            if (lm_detokenize(tok, npre ? pair : &ids[i], 1 + (npre > 0), &txt, &err)) {
                cli_error(&err);
                free(pre);
                free(ptxt);
                goto done;
            }
            const char *t = npre && !strncmp(txt, ptxt, plen) ? txt + plen : txt;
            /* a control token (BOS) decodes to nothing: show its name */
            printf("%6d -> '", (int)ids[i]);
            print_piece(t[0] ? t : lm_token_piece(tok, ids[i]));
            fputs("'\n", stdout);
            free(txt);
        }
        free(pre);
        free(ptxt);
    }
    rc = fflush(stdout) == 0 ? 0 : cli_errorf("cannot write the output");
done:
    free(ids);
    free(buf);
    lm_tokenizer_free(tok);
    lm_model_close(m);
    return rc;
}

/*
 * hub.c -- a MODEL argument given as a Hugging Face hub id ("Qwen/Qwen2.5-7B",
 * or "ORG/NAME/FILE.gguf" for one file of a repository), found in the local
 * HF cache, never on the network. The cache layout (huggingface_hub's):
 *
 *   CACHE/models--ORG--NAME/refs/main          the commit hash of branch main
 *   CACHE/models--ORG--NAME/snapshots/HASH/... the files (symlinks into blobs/)
 *
 * CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
 * --revision R picks refs/R (a branch or tag) or a snapshot HASH directly.
 */
#include "cli.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *cli_revision = NULL;

/* 1 when s is a path that exists. */
static int exists(const char *s) {
    struct stat st;
    return stat(s, &st) == 0;
}

/* 1 when s looks like ORG/NAME or ORG/NAME/FILE: two or three non-empty parts
 * of [A-Za-z0-9._-], not starting with '.' (so "./x" and "../x" are paths). */
static int hub_id_parts(const char *s, int *parts) {
    int n = 1;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == '/' || !*p) {
            if (p == start || *start == '.') return 0;
            if (!*p) break;
            n++;
            start = p + 1;
            continue;
        }
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                 *p == '_' || *p == '-';
        if (!ok) return 0;
    }
    *parts = n;
    return n == 2 || n == 3;
}

/* The cache directory into buf. */
static void cache_dir(char *buf, size_t n) {
    const char *c = getenv("HF_HUB_CACHE"), *h = getenv("HF_HOME"), *home = getenv("HOME");
    if (c && *c)
        snprintf(buf, n, "%s", c);
    else if (h && *h)
        snprintf(buf, n, "%s/hub", h);
    else
        snprintf(buf, n, "%s/.cache/huggingface/hub", home && *home ? home : "");
}

/* Read the first line of a small file (a ref: a commit hash) into buf. 0 ok. */
static int read_ref(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    buf[strcspn(buf, "\r\n \t")] = 0;
    return buf[0] && !strchr(buf, '/') ? 0 : -1;
}

/* See cli.h. */
int cli_resolve_model(const char **path, char *buf, size_t n, char *name, size_t name_n) {
    const char *s = *path;
    int parts = 0;
    if (name_n) name[0] = 0;
    if (exists(s) || !hub_id_parts(s, &parts)) return 0; /* a path: lm_model_open reports what is wrong */
    char org[256], repo[256], file[256] = "";
    const char *slash1 = strchr(s, '/'), *slash2 = strchr(slash1 + 1, '/');
    snprintf(org, sizeof org, "%.*s", (int)(slash1 - s), s);
    if (slash2) {
        snprintf(repo, sizeof repo, "%.*s", (int)(slash2 - slash1 - 1), slash1 + 1);
        snprintf(file, sizeof file, "%s", slash2 + 1);
    } else {
        snprintf(repo, sizeof repo, "%s", slash1 + 1);
    }
    const char *rev = cli_revision ? cli_revision : "main";
    char cache[2048], base[2600], ref[2800], hash[256], snap[3200];
    cache_dir(cache, sizeof cache);
    snprintf(base, sizeof base, "%s/models--%s--%s", cache, org, repo);
    snprintf(ref, sizeof ref, "%s/refs/%s", base, rev);
    if (read_ref(ref, hash, sizeof hash) != 0) {
        /* a commit hash given directly */
        snprintf(snap, sizeof snap, "%s/snapshots/%s", base, rev);
        if (strchr(rev, '/') || !exists(snap))
            return cli_errorf("%s: not a file, and revision '%s' is not in the Hugging Face cache (looked for %s "
                              "and %s; set HF_HUB_CACHE or HF_HOME, or download it: layermap never uses the network)",
                              s, rev, ref, snap);
        snprintf(hash, sizeof hash, "%s", rev);
    }
    snprintf(snap, sizeof snap, "%s/snapshots/%s", base, hash);
    if (!exists(snap))
        return cli_errorf("%s: %s names snapshot %s, which is not in the cache (%s missing)", s, ref, hash, snap);
    char cfg[3300];
    if (file[0]) {
        snprintf(buf, n, "%s/%s", snap, file);
        if (!exists(buf)) return cli_errorf("%s: no file '%s' in the cached snapshot %s", s, file, snap);
    } else {
        snprintf(cfg, sizeof cfg, "%s/config.json", snap);
        if (exists(cfg)) {
            snprintf(buf, n, "%s", snap);
        } else {
            /* a GGUF repository: its one .gguf, or the list to choose from */
            DIR *d = opendir(snap);
            int count = 0;
            char list[1024] = "", one[512] = "";
            size_t k = 0;
            struct dirent *e;
            while (d && (e = readdir(d))) {
                size_t l = strlen(e->d_name);
                if (l > 5 && !strcmp(e->d_name + l - 5, ".gguf")) {
                    count++;
                    snprintf(one, sizeof one, "%s", e->d_name);
                    if (k < sizeof list) k += (size_t)snprintf(list + k, sizeof list - k, " %s/%s", s, e->d_name);
                }
            }
            if (d) closedir(d);
            if (count == 0) return cli_errorf("%s: the cached snapshot %s has no config.json and no .gguf", s, snap);
            if (count > 1) return cli_errorf("%s: the cached snapshot has %d .gguf files; name one:%s", s, count, list);
            snprintf(buf, n, "%s/%s", snap, one);
        }
    }
    if (name_n) snprintf(name, name_n, "%s", file[0] ? file : repo);
    if (cli_verbose) fprintf(stderr, "layermap: %s -> %s\n", s, buf);
    *path = buf;
    return 0;
}

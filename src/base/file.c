/*
 * file.c -- mapped and whole-file reading, and page release (file.h).
 */
#include "base/file.h"
#include "base/alloc.h"
#include "base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int lm_file_map(lm_file *f, const char *path, lm_err *err) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lm_fail(err, LM_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lm_fail(err, LM_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lm_fail(err, LM_EIO, "%s: not a regular file", path);
    }
    f->path = lm_strdup(path);
    if (!f->path) {
        close(fd);
        return lm_nomem(err, strlen(path) + 1, "file name");
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            lm_free(f->path);
            f->path = NULL;
            return lm_fail(err, LM_EIO, "%s: mmap: %s", path, strerror(e));
        }
        f->data = p;
    }
    close(fd);
    return LM_OK;
}

void lm_file_unmap(lm_file *f) {
    if (!f) return;
    if (f->data) munmap((void *)f->data, f->size);
    lm_free(f->path);
    memset(f, 0, sizeof *f);
}

int lm_file_read_all(const char *path, char **out, size_t *len, lm_err *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return lm_fail(err, LM_EIO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = lm_malloc(cap + 1);
    if (!buf) {
        fclose(fp);
        return lm_nomem(err, cap, path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > ((size_t)1 << 40)) {
                lm_free(buf);
                fclose(fp);
                return lm_fail(err, LM_EIO, "%s: file too large", path);
            }
            char *nb = lm_realloc(buf, cap * 2 + 1);
            if (!nb) {
                lm_free(buf);
                fclose(fp);
                return lm_nomem(err, cap * 2, path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        lm_free(buf);
        return lm_fail(err, LM_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return LM_OK;
}

/* Drop the whole pages inside [p, p+n) from our resident set. Mappings are
 * read-only MAP_PRIVATE of files, so this only forgets the page table entries;
 * the page cache keeps the data and a later access re-faults it. */
void lm_release_pages(const void *p, size_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (!p || n == 0 || ps <= 0) return;
    uintptr_t a = (uintptr_t)p, e = a + n;
    uintptr_t lo = (a + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    uintptr_t hi = e & ~((uintptr_t)ps - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

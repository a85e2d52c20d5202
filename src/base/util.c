/*
 * util.c -- errors, allocation with fault injection, mapped files, atomic
 * output and small helpers shared by the whole library.
 */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

const char *lm_strerror(int code) {
    switch (code) {
    case LM_OK: return "ok";
    case LM_EIO: return "I/O error";
    case LM_ECORRUPT: return "corrupt or truncated file";
    case LM_EUNSUPPORTED: return "unsupported";
    case LM_ENOMEM: return "out of memory";
    case LM_EARG: return "bad argument";
    case LM_ESHAPE: return "shape mismatch";
    case LM_EENCODING: return "bad text encoding";
    case LM_EINTERNAL: return "internal error";
    case LM_ECANCELED: return "canceled";
    default: return "unknown error";
    }
}

static int vfail(lm_err *err, int code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        /* one line: fold any newline a caller let through */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return code;
}

/* Record a failure in err and return its code. */
int lm_fail(lm_err *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

/* Corruption goes through here: one place to set a breakpoint. Debug builds
 * (-DLM_DEBUG) append the reporting source line to the message. */
int lm_corrupt_at(lm_err *err, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, LM_ECORRUPT, fmt, ap);
    va_end(ap);
#ifdef LM_DEBUG
    if (err) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " [line %d]", line);
    }
#else
    (void)line;
#endif
    return LM_ECORRUPT;
}

int lm_nomem(lm_err *err, size_t bytes, const char *what) {
    return lm_fail(err, LM_ENOMEM, "out of memory (%zu bytes for %s)", bytes, what);
}

/* ------------------------------------------------------------------------ */
/* Allocation with fault injection                                           */
/* ------------------------------------------------------------------------ */

static _Atomic long fault_countdown = 0; /* 0 = off */
static _Atomic long fault_hits = 0;

void lm_fault_arm(long nth) {
    fault_countdown = nth;
    fault_hits = 0;
}

long lm_fault_hits(void) { return fault_hits; }

/* True when this allocation must fail. Once armed, the Nth and every later
 * allocation fail (as SQLite's "persistent" fault mode), so a caller that
 * ignores one failure cannot succeed by luck. */
static int fault_now(void) {
    if (fault_countdown <= 0) return 0;
    if (fault_countdown == 1) {
        fault_hits++;
        return 1;
    }
    fault_countdown--;
    return 0;
}

void *lm_malloc(size_t n) {
    if (fault_now()) return NULL;
    return malloc(n ? n : 1);
}

void *lm_calloc(size_t count, size_t size) {
    if (fault_now()) return NULL;
    if (count == 0 || size == 0) count = size = 1;
    return calloc(count, size);
}

void *lm_realloc(void *p, size_t n) {
    if (fault_now()) return NULL;
    return realloc(p, n ? n : 1);
}

void lm_free(void *p) { free(p); }

char *lm_strndup(const char *s, size_t n) {
    char *d = lm_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *lm_strdup(const char *s) { return lm_strndup(s, strlen(s)); }

/* ------------------------------------------------------------------------ */
/* Memory-mapped files                                                       */
/* ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------ */
/* Atomic output                                                             */
/* ------------------------------------------------------------------------ */

int lm_atomic_open(lm_atomic *a, const char *path, lm_err *err) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->path = lm_strdup(path);
    a->tmp_path = lm_malloc(n + 16);
    if (!a->path || !a->tmp_path) {
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_nomem(err, n + 16, "output file name");
    }
    snprintf(a->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp_path);
    if (fd < 0) {
        int e = errno;
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_fail(err, LM_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    /* mkstemp makes 0600; outputs are ordinary files */
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um);
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        int e = errno;
        close(fd);
        unlink(a->tmp_path);
        lm_free(a->path);
        lm_free(a->tmp_path);
        memset(a, 0, sizeof *a);
        return lm_fail(err, LM_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return LM_OK;
}

static void atomic_done(lm_atomic *a) {
    lm_free(a->path);
    lm_free(a->tmp_path);
    memset(a, 0, sizeof *a);
}

int lm_atomic_commit(lm_atomic *a, lm_err *err) {
    int rc = LM_OK;
    /* stdio keeps what a failed write() could not take and tries it again
     * here, so errno names the error (EFBIG past ulimit -f, ENOSPC, EIO) */
    errno = 0;
    int bad = fflush(a->f) != 0 || ferror(a->f);
    int e = errno ? errno : EIO;
    if (!bad && fsync(fileno(a->f)) != 0 && errno != EINVAL) {
        bad = 1;
        e = errno;
    }
    if (fclose(a->f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    a->f = NULL;
    if (bad) {
        rc = lm_fail(err, LM_EIO, "%s: write failed: %s", a->path, strerror(e));
        unlink(a->tmp_path);
    } else if (rename(a->tmp_path, a->path) != 0) {
        rc = lm_fail(err, LM_EIO, "%s: cannot rename into place: %s", a->path, strerror(errno));
        unlink(a->tmp_path);
    }
    atomic_done(a);
    return rc;
}

void lm_atomic_abort(lm_atomic *a) {
    if (a->f) fclose(a->f);
    if (a->tmp_path) unlink(a->tmp_path);
    atomic_done(a);
}

/* ------------------------------------------------------------------------ */
/* Small things                                                              */
/* ------------------------------------------------------------------------ */

const char *lm_basename(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; /* "dir/" -> "dir" */
    const char *end = path + n;
    const char *p = end;
    while (p > path && p[-1] != '/') p--;
    return p;
}

bool lm_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int lm_num_threads(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double lm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* IEEE 754 binary16 -> binary32, subnormals, Inf and NaN included. */
float lm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            man &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v;
    v.u = bits;
    return v.f;
}

const char *const lm_module_names[LM_N_MODULES] = {
    "attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate",
};

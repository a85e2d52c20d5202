/*
 * file.h -- reading input files: a whole file mapped read-only (model
 * weights, datasets), a small file read into memory (JSON), and giving a
 * mapping's pages back to the page cache once they have been read.
 */
#ifndef LM_BASE_FILE_H
#define LM_BASE_FILE_H

#include "layermap.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lm_file {
    char *path;          /* owned copy */
    const uint8_t *data; /* (size) bytes; NULL for an empty file */
    size_t size;
} lm_file;

/* Map a whole regular file read-only; unmap with lm_file_unmap (which also
 * takes a zeroed or failed lm_file). Errors: LM_EIO "<path>: <strerror>",
 * LM_ENOMEM. */
int lm_file_map(lm_file *f, const char *path, lm_err *err);
void lm_file_unmap(lm_file *f);
/* Read a whole (small) file into a NUL-terminated lm_malloc'd buffer, *len
 * bytes without the NUL (len may be NULL). Errors: LM_EIO, LM_ENOMEM. */
int lm_file_read_all(const char *path, char **out, size_t *len, lm_err *err);
/* Drop the pages of [p, p+n) inside a read-only mapping from this process's
 * resident set (madvise MADV_DONTNEED on the page-aligned interior). The data
 * stays valid: a later read faults it in again from the page cache. */
void lm_release_pages(const void *p, size_t n);

#endif

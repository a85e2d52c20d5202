/*
 * ref_file.h -- reading the committed reference files (safetensors written by
 * tests/ref/ scripts) from the tests that compare against them.
 */
#ifndef LM_TEST_REF_FILE_H
#define LM_TEST_REF_FILE_H

#include "format/safetensors.h"

#include <stdlib.h>
#include <string.h>

/* Tensor `name` of f as floats (malloc'd; *n = element count), NULL if absent. */
static inline float *ref_tensor(const lm_st_file *f, const char *name, int64_t *n) {
    for (int i = 0; f && i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) {
            const lm_tensor *t = &f->tensors[i];
            int64_t cnt = lm_tensor_nelem(t);
            float *v = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
            lm_err err;
            if (lm_tensor_read_rows(t, 0, lm_tensor_rows(t), v, &err) != LM_OK) {
                free(v);
                return NULL;
            }
            if (n) *n = cnt;
            return v;
        }
    return NULL;
}

#endif

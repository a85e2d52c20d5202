/*
 * share.h -- the greedy share of weighted items among parts: the largest
 * first, each to the part with the least weight so far. The data's samples
 * among MPI ranks (lm_dataset_share), diff's tensors among them.
 */
#ifndef LM_BASE_SHARE_H
#define LM_BASE_SHARE_H

#include "layermap.h"

/* owner[i] = the part of item i, of weight w[i] (< 0: not shared, owner -1);
 * items by decreasing weight (ties: the lower index first), each to the part
 * with the least weight so far (ties: the lower part). A function of w and
 * parts alone, so every process makes the same plan; no part gets more than
 * another by more than the largest item. load (parts, may be NULL) receives
 * each part's weight. LM_ENOMEM, LM_EARG (parts < 1). */
int lm_share_greedy(const double *w, int n, int parts, int *owner, double *load, lm_err *err);

#endif

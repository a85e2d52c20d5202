/*
 * mpi.c -- data parallelism over MPI ranks for `attribute`, `ppl` and `diff`
 * (docs/CLUSTER.md). Built with MPI only by `make MPI=1` (mpicc, -DLM_MPI, into
 * build-mpi/); the default build compiles the one-process stubs at the end,
 * so it has no MPI header and no MPI symbol.
 *
 * The library knows nothing of MPI: it splits the samples and calls the sum
 * that cli_mpi_dist() hands it (lm_attr_dist). This file owns every MPI call:
 *  - MPI is started only when a launcher (mpirun, srun) started the process;
 *    a plain run of the MPI build is one process and never touches MPI;
 *  - ranks other than 0 print nothing (stdout and stderr go to /dev/null),
 *    but a failure of their own, which they print on the real stderr;
 *  - a failure every rank learns of at a known point (cli_mpi_agree) ends
 *    every rank with the first failing rank's message, printed once, and
 *    MPI_Finalize; any other failure of a rank once others may wait in a
 *    collective ends the job with MPI_Abort (cli_mpi_fail, cli_mpi_exit), so
 *    that no rank waits for ever.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LM_MPI
#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <unistd.h>

static int g_rank = 0, g_size = 1, g_up = 0, g_agreed = 0;
static long g_sums;            /* dist_sum calls, */
static double g_sum_n, g_sum_s; /* doubles and seconds in them (cli_mpi_stats) */
static FILE *g_err; /* rank > 0: the real stderr (fd 2 goes to /dev/null) */

/* Started by a launcher? Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; srun
 * and other PMIx / PMI launchers set PMIX_RANK or PMI_RANK. */
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_SIZE");
}

void cli_mpi_init(int *argc, char ***argv) {
    if (!launched()) return;
    int provided = 0;
    /* FUNNELED: OpenMP threads run inside each rank, only the main thread calls MPI */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "layermap: MPI_Init failed\n");
        exit(1);
    }
    g_up = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank > 0) {
        int fd = dup(2), null = open("/dev/null", O_WRONLY);
        g_err = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
            close(null);
        }
    }
    const char *ntasks = getenv("SLURM_NTASKS");
    if (g_size == 1 && ntasks && atoi(ntasks) > 1)
        fprintf(stderr, "layermap: warning: Slurm started %s tasks but MPI sees one rank: every task does all the work "
                        "(srun --mpi=pmix, or mpirun inside the allocation; docs/CLUSTER.md)\n", ntasks);
}

int cli_mpi_rank(void) { return g_rank; }
int cli_mpi_size(void) { return g_size; }

/* lm_attr_dist.sum: reduce to rank 0, then broadcast, so that every rank has
 * bit for bit the same sums (ablate-mean's means are used by all of them). */
static int dist_sum(void *ctx, double *buf, size_t n, lm_err *err) {
    (void)ctx;
    (void)err; /* MPI's default handler (MPI_ERRORS_ARE_FATAL) ends the job on a failed call */
    double t0 = MPI_Wtime();
    for (size_t at = 0; at < n;) {
        int c = n - at > (size_t)INT_MAX ? INT_MAX : (int)(n - at);
        if (g_rank == 0)
            MPI_Reduce(MPI_IN_PLACE, buf + at, c, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        else
            MPI_Reduce(buf + at, NULL, c, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        MPI_Bcast(buf + at, c, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        at += (size_t)c;
    }
    g_sums++;
    g_sum_n += (double)n;
    g_sum_s += MPI_Wtime() - t0;
    return 0;
}

void cli_mpi_stats(long *calls, double *doubles, double *secs) {
    *calls = g_sums;
    *doubles = g_sum_n;
    *secs = g_sum_s;
}

const lm_attr_dist *cli_mpi_dist(void) {
    static lm_attr_dist d;
    if (g_size < 2) return NULL;
    d = (lm_attr_dist){.rank = g_rank, .size = g_size, .ctx = NULL, .sum = dist_sum};
    return &d;
}

int cli_mpi_sum(double *buf, size_t n) { return g_size > 1 ? dist_sum(NULL, buf, n, NULL) : 0; }

int cli_mpi_agree(int failed, lm_err *err) {
    if (g_size < 2) return failed;
    int me = failed ? g_rank : g_size, first = g_size;
    MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == g_size) return 0;
    lm_err e = {0};
    if (g_rank == first) {
        e.code = err->code ? err->code : LM_EINTERNAL;
        if (first == 0)
            snprintf(e.msg, sizeof e.msg, "%s", err->msg[0] ? err->msg : lm_strerror(e.code));
        else
            snprintf(e.msg, sizeof e.msg, "rank %d of %d: %.990s", first, g_size, err->msg[0] ? err->msg : lm_strerror(e.code));
    }
    MPI_Bcast(&e.code, 1, MPI_INT, first, MPI_COMM_WORLD);
    MPI_Bcast(e.msg, (int)sizeof e.msg, MPI_CHAR, first, MPI_COMM_WORLD);
    e.msg[sizeof e.msg - 1] = 0;
    *err = e;
    g_agreed = 1; /* every rank fails here: cli_mpi_exit may finalize */
    return 1;
}

/* FNV-1a over every token and mask byte of d. */
static uint64_t data_hash(const lm_dataset *d) {
    uint64_t h = 1469598103934665603ull;
    for (int s = 0; s < d->n_seq; s++) {
        for (int t = 0; t < d->seqs[s].n; t++) {
            uint32_t v = (uint32_t)d->seqs[s].tok[t] ^ ((uint32_t)d->seqs[s].mask[t] << 31);
            for (int b = 0; b < 4; b++) {
                h ^= (v >> (8 * b)) & 0xff;
                h *= 1099511628211ull;
            }
        }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    return h;
}

int cli_mpi_same_data(const lm_model *m, const lm_dataset *d, const char *path, lm_err *err) {
    if (g_size < 2) return 0;
    const lm_config *c = &m->cfg; /* the shapes every reduced sum has */
    uint64_t mine[9] = {data_hash(d), (uint64_t)d->n_seq, (uint64_t)d->n_tokens, (uint64_t)c->arch,
                        (uint64_t)c->n_layer, (uint64_t)c->dim, (uint64_t)c->n_head * 65536u + (uint64_t)c->n_kv_head,
                        (uint64_t)c->ffn_dim, (uint64_t)c->vocab};
    uint64_t first[9];
    memcpy(first, mine, sizeof first);
    MPI_Bcast(first, 9, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int bad = 0;
    if (memcmp(mine + 3, first + 3, 6 * sizeof mine[0])) {
        bad = 1;
        err->code = LM_EARG;
        snprintf(err->msg, sizeof err->msg,
                 "%.800s: another model here than on rank 0 (%d layers, dim %d, ffn %d, vocab %d; rank 0: %d, %d, %d, "
                 "%d): every rank must read the same model",
                 m->path, c->n_layer, c->dim, c->ffn_dim, c->vocab, (int)first[4], (int)first[5], (int)first[7],
                 (int)first[8]);
    } else if (memcmp(mine, first, 3 * sizeof mine[0])) {
        bad = 1;
        err->code = LM_EARG;
        snprintf(err->msg, sizeof err->msg,
                 "%.800s: other data here than on rank 0 (%d sequences, %lld tokens; rank 0: %d, %lld): every rank "
                 "must read the same file",
                 path, d->n_seq, (long long)d->n_tokens, (int)first[1], (long long)first[2]);
    }
    return cli_mpi_agree(bad, err);
}

/* FNV-1a over the layer count and every module's shape, dtype and size. */
static uint64_t model_hash(const lm_model *m) {
    uint64_t h = 1469598103934665603ull;
    uint64_t v[5] = {(uint64_t)m->cfg.n_layer};
    for (int l = -1; l < m->cfg.n_layer; l++)
        for (int j = 0; j < (l < 0 ? 1 : LM_N_MODULES); j++) {
            if (l >= 0) {
                const lm_tensor *t = m->layers[l].w[j];
                v[0] = (uint64_t)l * 16u + (uint64_t)j;
                v[1] = (uint64_t)lm_tensor_rows(t);
                v[2] = (uint64_t)lm_tensor_cols(t);
                v[3] = (uint64_t)t->dtype;
                v[4] = (uint64_t)t->nbytes;
            }
            for (int k = 0; k < 5; k++)
                for (int b = 0; b < 8; b++) {
                    h ^= (v[k] >> (8 * b)) & 0xff;
                    h *= 1099511628211ull;
                }
        }
    return h;
}

int cli_mpi_same_models(lm_model *const *ms, int n, lm_err *err) {
    if (g_size < 2) return 0;
    int bad = -1;
    for (int i = 0; i < n; i++) {
        uint64_t mine = model_hash(ms[i]), first = mine;
        MPI_Bcast(&first, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        if (mine != first && bad < 0) bad = i;
    }
    if (bad >= 0) {
        err->code = LM_EARG;
        snprintf(err->msg, sizeof err->msg,
                 "%.800s: another model here than on rank 0 (layers, module shapes, types or sizes differ): every "
                 "rank must read the same models", ms[bad]->path);
    }
    return cli_mpi_agree(bad >= 0, err);
}

void cli_mpi_stopped_together(void) { g_agreed = 1; }

void cli_mpi_fail(const lm_err *err) {
    if (g_size < 2) return;
    FILE *f = g_rank > 0 && g_err ? g_err : stderr;
    fprintf(f, "layermap: rank %d of %d: %s\n", g_rank, g_size, err && err->msg[0] ? err->msg : "failed");
    fflush(f);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1); /* not reached */
}

int cli_mpi_exit(int rc) {
    if (!g_up) return rc;
    if (rc != 0 && g_size > 1 && !g_agreed) {
        /* a failure the other ranks may not know of: they could be waiting
         * in a collective, and would wait in MPI_Finalize for this one */
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
    return rc;
}

#else /* one process: no MPI in this build */

void cli_mpi_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (n && atoi(n) > 1 && !strcmp(getenv("OMPI_COMM_WORLD_RANK") ? getenv("OMPI_COMM_WORLD_RANK") : "", "0"))
        fprintf(stderr, "layermap: warning: this layermap was built without MPI (make MPI=1 builds build-mpi/layermap): "
                        "each of the %s processes does all the work\n", n);
}
int cli_mpi_rank(void) { return 0; }
int cli_mpi_size(void) { return 1; }
const lm_attr_dist *cli_mpi_dist(void) { return NULL; }
int cli_mpi_sum(double *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0;
}
int cli_mpi_agree(int failed, lm_err *err) {
    (void)err;
    return failed;
}
int cli_mpi_same_data(const lm_model *m, const lm_dataset *d, const char *path, lm_err *err) {
    (void)m;
    (void)d;
    (void)path;
    (void)err;
    return 0;
}
int cli_mpi_same_models(lm_model *const *ms, int n, lm_err *err) {
    (void)ms;
    (void)n;
    (void)err;
    return 0;
}
void cli_mpi_stats(long *calls, double *doubles, double *secs) {
    *calls = 0;
    *doubles = *secs = 0;
}
void cli_mpi_stopped_together(void) {}
void cli_mpi_fail(const lm_err *err) { (void)err; }
int cli_mpi_exit(int rc) { return rc; }

#endif

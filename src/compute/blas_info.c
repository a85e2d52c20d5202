/*
 * blas_info.c -- which OpenBLAS this process loaded, and whether it is the
 * build that layermap's OpenMP threads need.
 *
 * Debian installs three OpenBLAS builds side by side, all with the soname
 * libopenblas.so.0: sequential, pthreads and OpenMP. layermap runs OpenMP
 * threads; the pthread build starts its own threads beside them and the two
 * pools fight for the cores (measured: 0.55x on 2 cores), and the sequential
 * build runs every product on one core. The Makefile links an rpath to the
 * OpenMP build (LM_BLAS_RPATH below is that directory, empty when it was not
 * installed at build time), but the dynamic loader can still pick another:
 * LD_LIBRARY_PATH and LD_PRELOAD take precedence over a RUNPATH, a binary
 * built without the rpath follows the system's libopenblas.so.0 alternative
 * (installing libopenblas0-pthread makes that the pthread build), and in a
 * host process another library may have loaded libopenblas.so.0 first.
 *
 * So the check is made on what was loaded, not on what was meant:
 * openblas_get_parallel() (0 sequential, 1 pthreads, 2 OpenMP) and the shared
 * object that holds it (dladdr, then realpath through the alternatives'
 * symlinks). The library never prints: lm_blas_warning() returns the line and
 * the CLI prints it at start-up, the Python package warns on import.
 */
#include "layermap.h"

#include <cblas.h>
#include <dlfcn.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LM_BLAS_RPATH
#define LM_BLAS_RPATH "" /* the Makefile passes its OMPBLAS when it linked the rpath */
#endif
/* Where Debian's OpenMP build lives (the Makefile's OMPBLAS). */
#ifndef LM_OMPBLAS_DIR
#define LM_OMPBLAS_DIR "/usr/lib/x86_64-linux-gnu/openblas-openmp"
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char library[PATH_MAX];
static char warning[2 * PATH_MAX + 512]; /* the library and the fix, both paths */

static void probe(void) {
    Dl_info di;
    char real[PATH_MAX];
    if (dladdr((void *)openblas_get_parallel, &di) && di.dli_fname && di.dli_fname[0]) {
        /* the file itself, not the alternatives' symlink it was found through */
        snprintf(library, sizeof library, "%s", realpath(di.dli_fname, real) ? real : di.dli_fname);
    } else {
        /* not in a shared object: linked statically into this program */
        snprintf(library, sizeof library, "(linked statically)");
    }

    int par = openblas_get_parallel(), threads = omp_get_max_threads();
    if (par == 2 || threads <= 1) return;
    const char *what = par == 1 ? "beside OpenMP threads: products may run at half speed"
                                : "with OpenMP threads: every product runs on one core";
    /* the fix, from what put this build here */
    char fix[PATH_MAX + 128];
    const char *llp = getenv("LD_LIBRARY_PATH"), *pre = getenv("LD_PRELOAD");
    int have_omp = access(LM_OMPBLAS_DIR "/libopenblas.so.0", R_OK) == 0;
    if (!have_omp)
        snprintf(fix, sizeof fix, "install libopenblas0-openmp%s",
                 LM_BLAS_RPATH[0] ? "" : " and libopenblas-openmp-dev, then rebuild layermap");
    else if (pre && strstr(pre, "blas")) /* not a sanitizer's runtime */
        snprintf(fix, sizeof fix, "take OpenBLAS out of LD_PRELOAD");
    else if (llp && llp[0])
        snprintf(fix, sizeof fix, "unset LD_LIBRARY_PATH (it takes precedence over layermap's rpath%s%s)",
                 LM_BLAS_RPATH[0] ? " to " : "", LM_BLAS_RPATH);
    else if (!LM_BLAS_RPATH[0])
        snprintf(fix, sizeof fix, "rebuild layermap (make): it was built with no rpath to %s "
                                  "(libopenblas0-openmp was not installed then)", LM_OMPBLAS_DIR);
    else
        snprintf(fix, sizeof fix, "another library loaded libopenblas.so.0 before layermap: load layermap first");
    const char *core = openblas_get_corename();
    snprintf(warning, sizeof warning, "loaded %s (OpenBLAS %s build, core %s) %s; %s", library,
             lm_blas_variant(), core ? core : "unknown", what, fix);
}

const char *lm_blas_variant(void) {
    switch (openblas_get_parallel()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "OpenMP";
    default: return "unknown";
    }
}

const char *lm_blas_library(void) {
    pthread_once(&once, probe);
    return library;
}

const char *lm_blas_warning(void) {
    pthread_once(&once, probe);
    return warning[0] ? warning : NULL;
}

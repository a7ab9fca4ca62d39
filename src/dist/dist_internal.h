/* dist_internal.h: private to src/dist/ -- what dist_mpi.c and dist_single.c share (argument
 * checks, the local copy of backend memory), the NCCL layer of dist_nccl.c, and one hook for
 * tests/test_dist.c.
 *
 * Exactly one of dist_mpi.c (DSC_HAVE_MPI) and dist_single.c (no MPI) implements dist.h; the
 * other compiles to nothing. dist_nccl.c (DSC_HAVE_NCCL, MPI builds only) is the only file that
 * includes nccl.h and the CUDA runtime; it knows nothing of MPI: dist_mpi.c bootstraps it by
 * broadcasting the unique id that rank 0 gets from dist_nccl_unique_id.
 */
#ifndef DSC_DIST_INTERNAL_H
#define DSC_DIST_INTERNAL_H

#include <stddef.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/ssl_ops.h"
#include "dsc/dist.h"

/* Where a backend's memory lives, as far as collectives care. */
typedef enum dist_memory {
  DIST_MEMORY_HOST, /* ref, cpu: plain host pointers */
  DIST_MEMORY_CUDA, /* the CUDA backend: device pointers on the current CUDA device */
} dist_memory;

/* Host backends leave be->ssl NULL (ssl_ops.h); the CUDA backend is named "cuda". */
static inline dsc_status *dist_memory_of(const dsc_backend *be, dist_memory *out) {
  if (!be) return dsc_errorf("dsc_dist_bind: no backend given");
  if (be->name && strcmp(be->name, "cuda") == 0) {
    *out = DIST_MEMORY_CUDA;
    return NULL;
  }
  if (!be->ssl) {
    *out = DIST_MEMORY_HOST;
    return NULL;
  }
  return dsc_errorf("dsc_dist_bind: backend \"%s\" has device memory that dist/ does not know "
                    "how to communicate (host backends and \"cuda\" only)",
                    be->name ? be->name : "?");
}

/* The collectives' argument checks, one message style for both implementations. */
static inline dsc_status *dist_check_reduce(dsc_dtype dtype, dsc_reduce_op op, const char *what) {
  if (dtype != DSC_F32 && dtype != DSC_F64 && dtype != DSC_I32 && dtype != DSC_I64)
    return dsc_errorf("%s: dtype %s is not supported (F32, F64, I32, I64)", what,
                      dsc_dtype_name(dtype));
  if (op != DSC_REDUCE_SUM && op != DSC_REDUCE_MEAN && op != DSC_REDUCE_MAX)
    return dsc_errorf("%s: unknown reduce op %d", what, (int)op);
  if (op == DSC_REDUCE_MEAN && dtype != DSC_F32 && dtype != DSC_F64)
    return dsc_errorf("%s: MEAN needs a float dtype (F32, F64), not %s", what,
                      dsc_dtype_name(dtype));
  return NULL;
}

/* The wait loops' back-off between polls: sleeps *ns (nothing the first time), then doubles it
 * from 1 us up to 1 ms. */
static inline void dist_backoff(long *ns) {
  if (*ns > 0) {
    struct timespec ts = {0, *ns};
    nanosleep(&ts, NULL);
  }
  *ns = *ns == 0 ? 1000 : (*ns * 2 > 1000000 ? 1000000 : *ns * 2);
}

/* The one message of a collective that ran out of time (MPI and NCCL alike). */
static inline dsc_status *dist_timeout_error(const char *what, size_t bytes, double timeout_s, int rank) {
  return dsc_errorf("collective %s (%zu bytes) did not complete within %g s on rank %d: "
                    "another rank died, hung or took another path",
                    what, bytes, timeout_s, rank);
}

static inline dsc_status *dist_check_root(int root, int world, const char *what) {
  if (root < 0 || root >= world)
    return dsc_errorf("%s: root %d is not a rank of this job (0..%d)", what, root, world - 1);
  return NULL;
}

/* buf /= world over n elements of a float dtype (host memory), after a SUM. */
static inline void dist_host_divide(void *buf, size_t n, dsc_dtype dtype, int world) {
  if (dtype == DSC_F32) {
    float *x = (float *)buf;
    for (size_t i = 0; i < n; i++) x[i] /= (float)world;
  } else {
    double *x = (double *)buf;
    for (size_t i = 0; i < n; i++) x[i] /= (double)world;
  }
}

/* dst = src within one backend's memory (the world-1 all-gather): memmove on host memory, the
 * backend's own copy op (ssl_ops.h) on device memory. */
static inline dsc_status *dist_backend_copy(dsc_backend *be, void *dst, const void *src,
                                            size_t bytes) {
  if (dst == src || bytes == 0) return NULL;
  if (!be->ssl) {
    memmove(dst, src, bytes);
    return NULL;
  }
  return be->ssl->copy(be, dst, src, bytes);
}

/* For tests only: MPI messages carry at most `elems` elements (default INT_MAX, MPI's int
 * counts), so that tests/test_dist.c can exercise the chunking of larger buffers with small
 * ones. No effect in a build without MPI (a single process never sends). */
void dist_test_set_max_count(dsc_dist *d, size_t elems);

/* ---- NCCL (dist_nccl.c, built with DSC_HAVE_NCCL) ----
 * A communicator over the CUDA device that is current when dist_nccl_open is called, with its
 * own non-blocking stream. Every collective first waits for the bound backend's stream
 * (be->synchronize: its stream is private to the CUDA backend), then runs on the NCCL stream and
 * polls it and NCCL's asynchronous error until done or until timeout_s passes; on timeout or
 * error the communicator is aborted (ncclCommAbort) and every later call fails. */
#define DIST_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct dist_nccl dist_nccl;

/* Rank 0: a fresh unique id for dist_nccl_open (the other ranks receive it by broadcast). */
dsc_status *dist_nccl_unique_id(unsigned char id[DIST_NCCL_ID_BYTES]);
dsc_status *dist_nccl_open(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int world,
                           double timeout_s, dist_nccl **out);
dsc_status *dist_nccl_allreduce(dist_nccl *c, dsc_backend *be, void *buf, size_t n,
                                dsc_dtype dtype, dsc_reduce_op op);
dsc_status *dist_nccl_allgather(dist_nccl *c, dsc_backend *be, const void *send, void *recv,
                                size_t bytes);
dsc_status *dist_nccl_broadcast(dist_nccl *c, dsc_backend *be, void *buf, size_t bytes,
                                int root);
/* Ends the communicator now (ncclCommAbort), whatever its state; then frees it. */
void dist_nccl_abort(dist_nccl *c);
/* Destroys a healthy communicator (aborts a failed one) and frees it; NULL is fine. */
void dist_nccl_close(dist_nccl *c);

#endif

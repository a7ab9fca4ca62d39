/* dist.h: the data-parallel communicator -- rank, world size and collectives. src/dist/ is
 * the only place that knows MPI or NCCL (DESIGN.md).
 *
 * Launch: under OpenMPI's mpirun (or any launcher that sets OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK) dsc_dist_open initializes MPI and takes rank and size from MPI_COMM_WORLD; started
 * any other way it is a single process (rank 0 of 1) and never touches MPI. A build without MPI
 * is always a single process, and refuses to start when the environment says a launcher asked
 * for several.
 *
 * Collectives take memory of the backend bound with dsc_dist_bind: host memory on host backends
 * (MPI), device memory on the CUDA backend (NCCL, its communicator bootstrapped through MPI: rank 0
 * makes the unique id, MPI broadcasts it). The _host variants always take host memory (MPI). All
 * are blocking for the caller and in rank order: every rank must call the same collectives with
 * the same sizes in the same order. With one process every collective is a copy or nothing.
 *
 * Failure: a collective that does not complete within the timeout given to dsc_dist_open (a rank
 * died, hung or took another path) is an error on the ranks that wait, which then end the whole
 * job with dsc_dist_abort -- no rank hangs forever. A rank that fails on its own calls
 * dsc_dist_abort too, so the others do not wait for it.
 */
#ifndef DSC_DIST_H
#define DSC_DIST_H

#include <stddef.h>

#include "dsc/dtype.h"
#include "dsc/status.h"

typedef struct dsc_backend dsc_backend;
typedef struct dsc_dist dsc_dist;

typedef enum dsc_reduce_op {
  DSC_REDUCE_SUM,
  DSC_REDUCE_MEAN, /* sum / world size (F32, F64 only) */
  DSC_REDUCE_MAX,
} dsc_reduce_op;

/* timeout_s > 0: the longest any one collective may wait. */
dsc_status *dsc_dist_open(double timeout_s, dsc_dist **out);
int dsc_dist_rank(const dsc_dist *d);
int dsc_dist_world(const dsc_dist *d);
/* This process's index among the processes on its host (the GPU it takes: run.device=cuda
 * with several processes uses device local_rank). */
int dsc_dist_local_rank(const dsc_dist *d);
/* One line for logs, e.g. "MPI (Open MPI v4.1.4), 2 processes on 1 host(s)" or "single process". */
const char *dsc_dist_describe(const dsc_dist *d);

/* The backend whose memory the (non-_host) collectives take; call before them, again when
 * the backend changes. A CUDA backend with world > 1 needs a build with NCCL. */
dsc_status *dsc_dist_bind(dsc_dist *d, dsc_backend *be);

/* In place over n elements of `dtype` (F32, F64, I32, I64) in backend memory. */
dsc_status *dsc_dist_allreduce(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype, dsc_reduce_op op);
/* Rank r's `bytes` from `send` land at recv + r*bytes, every rank receiving all (backend
 * memory). `send` may be recv + rank*bytes (in place). */
dsc_status *dsc_dist_allgather(dsc_dist *d, const void *send, void *recv, size_t bytes);
/* `bytes` from `root` to every rank (backend memory). */
dsc_status *dsc_dist_broadcast(dsc_dist *d, void *buf, size_t bytes, int root);

/* The same on host memory, whatever the backend. */
dsc_status *dsc_dist_allreduce_host(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype,
                                    dsc_reduce_op op);
dsc_status *dsc_dist_allgather_host(dsc_dist *d, const void *send, void *recv, size_t bytes);
dsc_status *dsc_dist_broadcast_host(dsc_dist *d, void *buf, size_t bytes, int root);
dsc_status *dsc_dist_barrier(dsc_dist *d);

/* Ends every rank of the job now with `code` (MPI_Abort); a single process just returns. */
void dsc_dist_abort(dsc_dist *d, int code);
/* Finalizes MPI (after a barrier-free shutdown) and frees d; NULL is fine. */
void dsc_dist_close(dsc_dist *d);

#endif

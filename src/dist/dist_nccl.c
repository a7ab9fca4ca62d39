/* dist_nccl.c: the collectives on CUDA memory (NCCL), for dist_mpi.c; built with -DDSC_HAVE_NCCL
 * (and -DDSC_HAVE_MPI: dist_mpi.c bootstraps the communicator). Plain C against the CUDA runtime
 * API and NCCL.
 *
 * Conventions (dist_internal.h):
 *  - The communicator is made non-blocking (ncclConfig_t.blocking = 0) so that no NCCL call waits
 *    on other ranks: initialization and collectives return at once (possibly ncclInProgress) and
 *    nccl_wait polls ncclCommGetAsyncError and cudaStreamQuery with the same sleep schedule as
 *    the MPI path until done or until the timeout, then aborts the communicator.
 *  - Collectives run on the communicator's own non-blocking stream on the device that was
 *    current at dist_nccl_open (the CUDA backend sets its device on the calling thread). The
 *    bound backend's stream is private to it, so each collective first waits for it with
 *    be->synchronize (inputs complete); when the NCCL stream is done the results are in device
 *    memory, and anything the backend issues afterwards sees them.
 *  - MEAN is ncclAvg (NCCL >= 2.10); counts are size_t in NCCL, so nothing is chunked.
 */
#if defined(DSC_HAVE_NCCL) && defined(DSC_HAVE_MPI)

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/dist_internal.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "dist_nccl.c needs NCCL >= 2.14 (ncclAvg, non-blocking communicators)"
#endif

_Static_assert(sizeof(ncclUniqueId) == DIST_NCCL_ID_BYTES, "DIST_NCCL_ID_BYTES");

struct dist_nccl {
  ncclComm_t comm;
  cudaStream_t stream;
  int rank, world, device;
  double timeout_s;
  int failed; /* aborted after a timeout or an error: every later call fails */
};

#define NCCL_TRY(what, call)                                                                \
  do {                                                                                      \
    ncclResult_t nccl_e_ = (call);                                                          \
    if (nccl_e_ != ncclSuccess && nccl_e_ != ncclInProgress)                                \
      return DSC_ERR_AT("NCCL error %d (%s) in %s: %s", (int)nccl_e_,                       \
                        ncclGetErrorString(nccl_e_), (what), #call);                        \
  } while (0)
#define CUDA_TRY(what, call)                                                                \
  do {                                                                                      \
    cudaError_t cuda_e_ = (call);                                                           \
    if (cuda_e_ != cudaSuccess)                                                             \
      return DSC_ERR_AT("CUDA error %s (%s) in %s: %s", cudaGetErrorName(cuda_e_),          \
                        cudaGetErrorString(cuda_e_), (what), #call);                        \
  } while (0)

static double nccl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The communicator's pending work: initialization (stream NULL) or a collective on c->stream. */
static dsc_status *nccl_wait(dist_nccl *c, int with_stream, const char *what, size_t bytes) {
  double deadline = nccl_now() + c->timeout_s;
  long sleep_ns = 0;
  for (;;) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t e = ncclCommGetAsyncError(c->comm, &async);
    if (e != ncclSuccess) async = e;
    if (async != ncclSuccess && async != ncclInProgress) {
      c->failed = 1;
      ncclCommAbort(c->comm);
      return dsc_errorf("NCCL %s on rank %d failed: error %d (%s)%s", what, c->rank, (int)async,
                        ncclGetErrorString(async),
                        async == ncclInvalidUsage
                            ? " (two ranks on one GPU? each process needs its own device)"
                            : "");
    }
    if (async == ncclSuccess) {
      cudaError_t q = with_stream ? cudaStreamQuery(c->stream) : cudaSuccess;
      if (q == cudaSuccess) return NULL;
      if (q != cudaErrorNotReady) {
        c->failed = 1;
        ncclCommAbort(c->comm);
        return dsc_errorf("NCCL %s on rank %d: CUDA error %s (%s)", what, c->rank,
                          cudaGetErrorName(q), cudaGetErrorString(q));
      }
    }
    if (nccl_now() > deadline) {
      c->failed = 1;
      ncclCommAbort(c->comm);
      return dist_timeout_error(what, bytes, c->timeout_s, c->rank);
    }
    dist_backoff(&sleep_ns);
  }
}

dsc_status *dist_nccl_unique_id(unsigned char id[DIST_NCCL_ID_BYTES]) {
  ncclUniqueId uid;
  NCCL_TRY("ncclGetUniqueId", ncclGetUniqueId(&uid));
  memcpy(id, &uid, sizeof uid);
  return NULL;
}

dsc_status *dist_nccl_open(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int world,
                           double timeout_s, dist_nccl **out) {
  *out = NULL;
  dist_nccl *c = calloc(1, sizeof *c);
  if (!c) return dsc_errorf("dist_nccl_open: out of memory");
  c->rank = rank;
  c->world = world;
  c->timeout_s = timeout_s;
  cudaError_t ce = cudaGetDevice(&c->device);
  if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (ce != cudaSuccess) {
    free(c);
    return DSC_ERR_AT("CUDA error %s (%s) making the NCCL stream", cudaGetErrorName(ce),
                      cudaGetErrorString(ce));
  }
  ncclUniqueId uid;
  memcpy(&uid, id, sizeof uid);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t e = ncclCommInitRankConfig(&c->comm, world, uid, rank, &config);
  if (e != ncclSuccess && e != ncclInProgress) {
    cudaStreamDestroy(c->stream);
    free(c);
    return DSC_ERR_AT("NCCL error %d (%s) in ncclCommInitRankConfig on rank %d of %d", (int)e,
                      ncclGetErrorString(e), rank, world);
  }
  dsc_status *st = nccl_wait(c, 0, "communicator initialization", 0);
  if (st) {
    cudaStreamDestroy(c->stream);
    free(c);
    return st;
  }
  *out = c;
  return NULL;
}

static dsc_status *nccl_check(dist_nccl *c, dsc_backend *be, const char *what) {
  if (!c) return dsc_errorf("%s: no NCCL communicator (dsc_dist_bind a CUDA backend first)", what);
  if (c->failed)
    return dsc_errorf("%s on rank %d: the NCCL communicator was aborted after an earlier "
                      "failure; the job must end (dsc_dist_abort)",
                      what, c->rank);
  CUDA_TRY(what, cudaSetDevice(c->device));
  /* The backend's own stream must have finished writing the inputs. */
  return dsc_status_wrap(be->synchronize(be), "%s: waiting for the backend", what);
}

dsc_status *dist_nccl_allreduce(dist_nccl *c, dsc_backend *be, void *buf, size_t n,
                                dsc_dtype dtype, dsc_reduce_op op) {
  DSC_TRY(nccl_check(c, be, "allreduce"));
  ncclDataType_t type = dtype == DSC_F32   ? ncclFloat32
                        : dtype == DSC_F64 ? ncclFloat64
                        : dtype == DSC_I32 ? ncclInt32
                                           : ncclInt64; /* the caller checked the dtype */
  ncclRedOp_t rop = op == DSC_REDUCE_MEAN ? ncclAvg : op == DSC_REDUCE_MAX ? ncclMax : ncclSum;
  NCCL_TRY("allreduce", ncclAllReduce(buf, buf, n, type, rop, c->comm, c->stream));
  return nccl_wait(c, 1, "allreduce", n * dsc_dtype_size(dtype));
}

dsc_status *dist_nccl_allgather(dist_nccl *c, dsc_backend *be, const void *send, void *recv,
                                size_t bytes) {
  DSC_TRY(nccl_check(c, be, "allgather"));
  /* In place when send == recv + rank*bytes, which NCCL recognizes itself. */
  NCCL_TRY("allgather", ncclAllGather(send, recv, bytes, ncclUint8, c->comm, c->stream));
  return nccl_wait(c, 1, "allgather", bytes * (size_t)c->world);
}

dsc_status *dist_nccl_broadcast(dist_nccl *c, dsc_backend *be, void *buf, size_t bytes,
                                int root) {
  DSC_TRY(nccl_check(c, be, "broadcast"));
  NCCL_TRY("broadcast", ncclBroadcast(buf, buf, bytes, ncclUint8, root, c->comm, c->stream));
  return nccl_wait(c, 1, "broadcast", bytes);
}

void dist_nccl_abort(dist_nccl *c) {
  if (!c) return;
  if (!c->failed) ncclCommAbort(c->comm);
  cudaStreamDestroy(c->stream);
  free(c);
}

void dist_nccl_close(dist_nccl *c) {
  if (!c) return;
  if (!c->failed) {
    /* A non-blocking communicator finalizes asynchronously: wait for it (bounded like a
     * collective), then destroy it; a failed wait has aborted it. */
    ncclResult_t e = ncclCommFinalize(c->comm);
    if (e != ncclSuccess && e != ncclInProgress) {
      ncclCommAbort(c->comm);
    } else {
      dsc_status *st = nccl_wait(c, 0, "finalize", 0);
      if (st)
        dsc_status_free(st);
      else
        ncclCommDestroy(c->comm);
    }
  }
  cudaStreamDestroy(c->stream);
  free(c);
}

#endif

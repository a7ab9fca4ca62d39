/* dist_mpi.c: dist.h with MPI (built when the Makefile finds mpicc: -DDSC_HAVE_MPI), and NCCL for
 * CUDA memory (dist_nccl.c, -DDSC_HAVE_NCCL).
 *
 * Conventions:
 *  - MPI is initialized only when a launcher's variables are set (OMPI_COMM_WORLD_SIZE,
 *    PMI_SIZE, PMIX_RANK); otherwise this is a single process that never calls MPI (a singleton
 *    MPI_Init is slow and prints warnings). MPI_THREAD_FUNNELED: only the main thread calls MPI
 *    (OpenMP threads compute).
 *  - MPI_COMM_WORLD has MPI_ERRORS_RETURN; every MPI call goes through MPI_TRY, which turns an
 *    error code into a status naming the collective, the rank, MPI_Error_string and file:line.
 *  - Every collective is non-blocking MPI (MPI_Iallreduce, ...) completed by dist_wait: MPI_Test
 *    in a loop, yielding the core between tests for the first DIST_SPIN_S, then sleeping (1 us
 *    doubling up to 1 ms), until the request completes or timeout_s passes. A timeout is an error; the request stays pending (MPI cannot
 *    cancel a collective), the communicator is marked failed (every later collective fails at
 *    once) and the buffer of that collective stays in MPI's use until dsc_dist_abort or
 *    dsc_dist_close. The caller is expected to call dsc_dist_abort; dsc_dist_close instead
 *    waits timeout_s more for the late ranks and finalizes only if the request completed.
 *  - MPI counts are int: buffers of more than max_count elements (INT_MAX) go in chunks, one
 *    request at a time; all-reduces also in pieces of DIST_ALLREDUCE_CHUNK_BYTES (speed).
 *  - MEAN is a SUM followed by a division by the world size on the host (F32/F64 only).
 */
#ifdef DSC_HAVE_MPI

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/dist_internal.h"

/* dist_wait polls without sleeping (yielding the core) for this long, then sleeps between tests.
 * MPI moves a non-blocking collective's data only inside MPI_Test, so any sleep while data flows
 * stalls it (measured: sleeping from the first test made a 1000-float all-reduce of 2 ranks 400x
 * slower and a 100 MB one 1.4x slower than MPI_Allreduce); a wait this long is a slow or stuck
 * rank, not a transfer, and then the sleeps keep a waiting rank off the CPU. */
#define DIST_SPIN_S 0.5

/* All-reduces go in pieces of at most this many bytes, one after the other: the reduction then
 * works in cache (measured on 2 ranks of one host, 25M floats: 189 ms in one MPI_Iallreduce,
 * 50 ms in 1 MiB pieces, 80 ms for one blocking MPI_Allreduce). */
#define DIST_ALLREDUCE_CHUNK_BYTES ((size_t)1 << 20)

struct dsc_dist {
  int rank, world;
  int local_rank;   /* ranks before this one on the same host */
  int mpi_on;       /* MPI is initialized and used by this communicator */
  int mpi_owned;    /* we called MPI_Init_thread, so close finalizes */
  double timeout_s;
  size_t max_count; /* elements per MPI message */
  dsc_backend *be;  /* dsc_dist_bind's backend */
  dist_memory mem;
  dist_nccl *nccl;  /* CUDA backend, world > 1 */
  /* A collective that failed (timeout) and is still pending; failed stays set. */
  int failed;
  MPI_Request stuck;
  char describe[MPI_MAX_LIBRARY_VERSION_STRING + 64];
};

/* ---- errors ---- */

/* Any MPI error leaves MPI_COMM_WORLD in an unknown state: the communicator is marked failed. */
static dsc_status *dist_mpi_error(dsc_dist *d, const char *what, int code, const char *file,
                                  int line) {
  d->failed = 1;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", code);
  return dsc_errorf("%s:%d: MPI error in %s on rank %d: %s", file, line, what, d->rank, text);
}

#define MPI_TRY(d, what, call)                                                  \
  do {                                                                          \
    int mpi_e_ = (call);                                                        \
    if (mpi_e_ != MPI_SUCCESS) return dist_mpi_error((d), (what), mpi_e_, __FILE__, __LINE__); \
  } while (0)

static dsc_status *dist_check_usable(const dsc_dist *d, const char *what) {
  if (!d) return dsc_errorf("%s: no communicator", what);
  if (d->failed)
    return dsc_errorf("%s on rank %d: an earlier collective failed; the job must end "
                      "(dsc_dist_abort)",
                      what, d->rank);
  return NULL;
}

/* ---- waiting ---- */

static double dist_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Tests `req` until it completes or d->timeout_s passes (see the file comment). */
static dsc_status *dist_wait(dsc_dist *d, MPI_Request *req, const char *what, size_t bytes) {
  double start = dist_now(), deadline = start + d->timeout_s;
  long sleep_ns = 0;
  for (;;) {
    int done = 0;
    MPI_TRY(d, what, MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return NULL;
    double now = dist_now();
    if (now - start < DIST_SPIN_S) {
      sched_yield();
      continue;
    }
    if (now > deadline) {
      d->failed = 1;
      d->stuck = *req;
      return dist_timeout_error(what, bytes, d->timeout_s, d->rank);
    }
    dist_backoff(&sleep_ns);
  }
}

/* ---- open, describe, close ---- */

static int dist_env_set(const char *name) {
  const char *v = getenv(name);
  return v && *v;
}

/* "MPI (<library version up to its first comma or newline>), N processes on H host(s)". */
static dsc_status *dist_describe_mpi(dsc_dist *d) {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_TRY(d, "MPI_Get_library_version", MPI_Get_library_version(version, &len));
  version[strcspn(version, ",\n")] = 0;

  char name[MPI_MAX_PROCESSOR_NAME];
  memset(name, 0, sizeof name);
  MPI_TRY(d, "MPI_Get_processor_name", MPI_Get_processor_name(name, &len));
  char *all = calloc((size_t)d->world, sizeof name);
  if (!all) return dsc_errorf("dsc_dist_open: out of memory");
  dsc_status *st = dsc_dist_allgather_host(d, name, all, sizeof name);
  if (st) {
    free(all);
    return dsc_status_wrap(st, "dsc_dist_open: gathering host names");
  }
  int hosts = 0;
  for (int r = 0; r < d->world; r++) {
    int seen = 0;
    for (int q = 0; q < r && !seen; q++)
      seen = strncmp(all + (size_t)r * sizeof name, all + (size_t)q * sizeof name, sizeof name) == 0;
    hosts += !seen;
  }
  for (int q = 0; q < d->rank; q++)
    d->local_rank += strncmp(all + (size_t)q * sizeof name, all + (size_t)d->rank * sizeof name, sizeof name) == 0;
  free(all);
  snprintf(d->describe, sizeof d->describe, "MPI (%s), %d process%s on %d host(s)", version,
           d->world, d->world == 1 ? "" : "es", hosts);
  return NULL;
}

dsc_status *dsc_dist_open(double timeout_s, dsc_dist **out) {
  *out = NULL;
  if (!(timeout_s > 0))
    return dsc_errorf("dsc_dist_open: the collective timeout must be > 0 s (got %g)", timeout_s);
  dsc_dist *d = calloc(1, sizeof *d);
  if (!d) return dsc_errorf("dsc_dist_open: out of memory");
  d->world = 1;
  d->timeout_s = timeout_s;
  d->max_count = INT_MAX;
  d->stuck = MPI_REQUEST_NULL;
  snprintf(d->describe, sizeof d->describe, "single process");
  if (!dist_env_set("OMPI_COMM_WORLD_SIZE") && !dist_env_set("PMI_SIZE") &&
      !dist_env_set("PMIX_RANK")) {
    *out = d;
    return NULL;
  }

  dsc_status *st = NULL;
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (finalized) {
    free(d);
    return dsc_errorf("dsc_dist_open: MPI was already finalized in this process (one "
                      "communicator per process)");
  }
  if (!inited) {
    int provided = 0;
    int e = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (e != MPI_SUCCESS) {
      st = dist_mpi_error(d, "MPI_Init_thread", e, __FILE__, __LINE__);
      free(d);
      return st;
    }
    d->mpi_owned = 1;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      free(d);
      return dsc_errorf("dsc_dist_open: this MPI library does not support "
                        "MPI_THREAD_FUNNELED (it provides level %d)",
                        provided);
    }
  }
  d->mpi_on = 1;
  int e = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (e == MPI_SUCCESS) e = MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  if (e == MPI_SUCCESS) e = MPI_Comm_size(MPI_COMM_WORLD, &d->world);
  if (e != MPI_SUCCESS) st = dist_mpi_error(d, "dsc_dist_open", e, __FILE__, __LINE__);
  if (!st) st = dist_describe_mpi(d);
  if (st) {
    /* No MPI_Finalize: it could wait for ranks that are gone. The process exits with the error
     * and the launcher ends the job (mpirun does when a rank exits without finalizing). */
    free(d);
    return st;
  }
  *out = d;
  return NULL;
}

int dsc_dist_rank(const dsc_dist *d) { return d ? d->rank : 0; }
int dsc_dist_world(const dsc_dist *d) { return d ? d->world : 1; }
int dsc_dist_local_rank(const dsc_dist *d) { return d ? d->local_rank : 0; }
const char *dsc_dist_describe(const dsc_dist *d) { return d ? d->describe : "single process"; }

void dist_test_set_max_count(dsc_dist *d, size_t elems) {
  d->max_count = elems > 0 && elems <= INT_MAX ? elems : INT_MAX;
}

void dsc_dist_abort(dsc_dist *d, int code) {
  if (!d) return;
  fflush(NULL);
  if (d->nccl) {
    dist_nccl_abort(d->nccl);
    d->nccl = NULL;
  }
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (d->mpi_on && inited && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

void dsc_dist_close(dsc_dist *d) {
  if (!d) return;
  dist_nccl_close(d->nccl);
  int finalize = d->mpi_owned;
  if (d->mpi_on && d->stuck != MPI_REQUEST_NULL) {
    /* A collective timed out and nobody aborted: give the late ranks one more timeout to
     * arrive; MPI_Finalize with a pending collective could hang, so skip it if they do not. */
    double deadline = dist_now() + d->timeout_s;
    int done = 0;
    while (!done && dist_now() <= deadline) {
      if (MPI_Test(&d->stuck, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
      if (!done) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
      }
    }
    if (!done) finalize = 0;
  }
  if (finalize) MPI_Finalize();
  free(d);
}

/* ---- binding ---- */

#ifdef DSC_HAVE_NCCL
/* Rank 0 makes the unique id, MPI broadcasts it with a flag saying whether rank 0 could. */
static dsc_status *dist_nccl_bootstrap(dsc_dist *d) {
  unsigned char msg[1 + DIST_NCCL_ID_BYTES];
  memset(msg, 0, sizeof msg);
  dsc_status *made = NULL;
  if (d->rank == 0) {
    made = dist_nccl_unique_id(msg + 1);
    msg[0] = made ? 0 : 1;
  }
  /* Rank 0 broadcasts even when it failed, so the others learn it instead of waiting. */
  dsc_status *st = dsc_dist_broadcast_host(d, msg, sizeof msg, 0);
  if (made) {
    dsc_status_free(st);
    return dsc_status_wrap(made, "dsc_dist_bind: NCCL unique id");
  }
  if (st) return dsc_status_wrap(st, "dsc_dist_bind: broadcasting the NCCL unique id");
  if (!msg[0])
    return dsc_errorf("dsc_dist_bind on rank %d: rank 0 could not create the NCCL unique id",
                      d->rank);
  return dist_nccl_open(msg + 1, d->rank, d->world, d->timeout_s, &d->nccl);
}
#endif

dsc_status *dsc_dist_bind(dsc_dist *d, dsc_backend *be) {
  DSC_TRY(dist_check_usable(d, "dsc_dist_bind"));
  dist_memory mem = DIST_MEMORY_HOST;
  DSC_TRY(dist_memory_of(be, &mem));
  if (be == d->be) return NULL;
  if (d->nccl) {
    dist_nccl_close(d->nccl);
    d->nccl = NULL;
  }
  d->be = NULL;
  if (mem == DIST_MEMORY_CUDA && d->world > 1) {
#ifdef DSC_HAVE_NCCL
    dsc_status *st = dist_nccl_bootstrap(d);
    if (st) {
      d->failed = 1;
      return st;
    }
#else
    return dsc_errorf("dsc_dist_bind: this build has no NCCL: multi-GPU runs (%d processes on "
                      "the CUDA backend) need NCCL at build time (nccl.h and libnccl in "
                      "CUDA_HOME; rebuild with make) -- or run on the CPU backend",
                      d->world);
#endif
  }
  d->be = be;
  d->mem = mem;
  return NULL;
}

static dsc_status *dist_check_bound(const dsc_dist *d, const char *what) {
  DSC_TRY(dist_check_usable(d, what));
  if (!d->be)
    return dsc_errorf("%s: no backend bound (call dsc_dist_bind before collectives on backend "
                      "memory)",
                      what);
  return NULL;
}

/* ---- host collectives ---- */

static MPI_Datatype dist_mpi_type(dsc_dtype dtype) {
  switch (dtype) {
  case DSC_F32: return MPI_FLOAT;
  case DSC_F64: return MPI_DOUBLE;
  case DSC_I32: return MPI_INT32_T;
  default: return MPI_INT64_T; /* DSC_I64; others are rejected by dist_check_reduce */
  }
}

dsc_status *dsc_dist_allreduce_host(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype,
                                    dsc_reduce_op op) {
  DSC_TRY(dist_check_usable(d, "allreduce"));
  DSC_TRY(dist_check_reduce(dtype, op, "allreduce"));
  if (d->world == 1 || n == 0) return NULL;
  size_t esize = dsc_dtype_size(dtype);
  MPI_Datatype type = dist_mpi_type(dtype);
  MPI_Op mop = op == DSC_REDUCE_MAX ? MPI_MAX : MPI_SUM;
  size_t chunk = DIST_ALLREDUCE_CHUNK_BYTES / esize;
  if (chunk > d->max_count) chunk = d->max_count;
  for (size_t off = 0; off < n; off += chunk) {
    size_t count = n - off < chunk ? n - off : chunk;
    MPI_Request req;
    MPI_TRY(d, "allreduce", MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * esize, (int)count,
                                           type, mop, MPI_COMM_WORLD, &req));
    DSC_TRY(dist_wait(d, &req, "allreduce", n * esize));
  }
  if (op == DSC_REDUCE_MEAN) dist_host_divide(buf, n, dtype, d->world);
  return NULL;
}

dsc_status *dsc_dist_allgather_host(dsc_dist *d, const void *send, void *recv, size_t bytes) {
  DSC_TRY(dist_check_usable(d, "allgather"));
  char *own = (char *)recv + (size_t)d->rank * bytes;
  if (d->world == 1) {
    if (send != own && bytes) memmove(own, send, bytes);
    return NULL;
  }
  if (bytes == 0) return NULL;
  int in_place = send == own;
  for (size_t off = 0; off < bytes; off += d->max_count) {
    size_t len = bytes - off < d->max_count ? bytes - off : d->max_count;
    /* Chunk `off` of every rank lands at recv + r*bytes + off: a block of len bytes whose
     * extent is the whole per-rank stride. */
    MPI_Datatype block, strided;
    MPI_TRY(d, "allgather", MPI_Type_contiguous((int)len, MPI_BYTE, &block));
    int e = MPI_Type_create_resized(block, 0, (MPI_Aint)bytes, &strided);
    MPI_Type_free(&block);
    if (e != MPI_SUCCESS) return dist_mpi_error(d, "allgather", e, __FILE__, __LINE__);
    e = MPI_Type_commit(&strided);
    MPI_Request req = MPI_REQUEST_NULL;
    if (e == MPI_SUCCESS)
      e = MPI_Iallgather(in_place ? MPI_IN_PLACE : (const char *)send + off, (int)len, MPI_BYTE,
                         (char *)recv + off, 1, strided, MPI_COMM_WORLD, &req);
    /* Freeing a datatype in use by a pending operation is allowed (MPI marks it for
     * deallocation once the operation completes). */
    MPI_Type_free(&strided);
    if (e != MPI_SUCCESS) return dist_mpi_error(d, "allgather", e, __FILE__, __LINE__);
    DSC_TRY(dist_wait(d, &req, "allgather", bytes * (size_t)d->world));
  }
  return NULL;
}

dsc_status *dsc_dist_broadcast_host(dsc_dist *d, void *buf, size_t bytes, int root) {
  DSC_TRY(dist_check_usable(d, "broadcast"));
  DSC_TRY(dist_check_root(root, d->world, "broadcast"));
  if (d->world == 1 || bytes == 0) return NULL;
  for (size_t off = 0; off < bytes; off += d->max_count) {
    size_t len = bytes - off < d->max_count ? bytes - off : d->max_count;
    MPI_Request req;
    MPI_TRY(d, "broadcast", MPI_Ibcast((char *)buf + off, (int)len, MPI_BYTE, root,
                                       MPI_COMM_WORLD, &req));
    DSC_TRY(dist_wait(d, &req, "broadcast", bytes));
  }
  return NULL;
}

dsc_status *dsc_dist_barrier(dsc_dist *d) {
  DSC_TRY(dist_check_usable(d, "barrier"));
  if (d->world == 1) return NULL;
  MPI_Request req;
  MPI_TRY(d, "barrier", MPI_Ibarrier(MPI_COMM_WORLD, &req));
  return dist_wait(d, &req, "barrier", 0);
}

/* ---- collectives on the bound backend's memory ---- */

#ifdef DSC_HAVE_NCCL
/* A failed NCCL collective has aborted its communicator: the job must end. */
static dsc_status *dist_nccl_result(dsc_dist *d, dsc_status *st) {
  if (st) d->failed = 1;
  return st;
}
#endif

dsc_status *dsc_dist_allreduce(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype,
                               dsc_reduce_op op) {
  DSC_TRY(dist_check_bound(d, "allreduce"));
  if (d->mem == DIST_MEMORY_HOST) return dsc_dist_allreduce_host(d, buf, n, dtype, op);
  DSC_TRY(dist_check_reduce(dtype, op, "allreduce"));
  if (d->world == 1 || n == 0) return NULL;
#ifdef DSC_HAVE_NCCL
  return dist_nccl_result(d, dist_nccl_allreduce(d->nccl, d->be, buf, n, dtype, op));
#else
  return dsc_errorf("allreduce: this build has no NCCL");
#endif
}

dsc_status *dsc_dist_allgather(dsc_dist *d, const void *send, void *recv, size_t bytes) {
  DSC_TRY(dist_check_bound(d, "allgather"));
  if (d->mem == DIST_MEMORY_HOST) return dsc_dist_allgather_host(d, send, recv, bytes);
  if (d->world == 1) return dist_backend_copy(d->be, recv, send, bytes); /* rank 0's slot */
  if (bytes == 0) return NULL;
#ifdef DSC_HAVE_NCCL
  return dist_nccl_result(d, dist_nccl_allgather(d->nccl, d->be, send, recv, bytes));
#else
  return dsc_errorf("allgather: this build has no NCCL");
#endif
}

dsc_status *dsc_dist_broadcast(dsc_dist *d, void *buf, size_t bytes, int root) {
  DSC_TRY(dist_check_bound(d, "broadcast"));
  if (d->mem == DIST_MEMORY_HOST) return dsc_dist_broadcast_host(d, buf, bytes, root);
  DSC_TRY(dist_check_root(root, d->world, "broadcast"));
  if (d->world == 1 || bytes == 0) return NULL;
#ifdef DSC_HAVE_NCCL
  return dist_nccl_result(d, dist_nccl_broadcast(d->nccl, d->be, buf, bytes, root));
#else
  return dsc_errorf("broadcast: this build has no NCCL");
#endif
}

#ifndef DSC_HAVE_NCCL
/* Without NCCL no communicator is ever made (dsc_dist_bind refuses first). */
void dist_nccl_abort(dist_nccl *c) { (void)c; }
void dist_nccl_close(dist_nccl *c) { (void)c; }
#endif

#endif /* DSC_HAVE_MPI */

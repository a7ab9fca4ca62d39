/* dist_single.c: dist.h in a build without MPI (the Makefile found no mpicc, or MPI=0): always one
 * process, rank 0 of 1. Collectives check their arguments as the MPI build does, then are copies
 * (all-gather into the own slot) or nothing. dsc_dist_open refuses to start when a launcher's
 * variables say the job has several processes: each would otherwise train alone, believing it is
 * the whole job.
 */
#ifndef DSC_HAVE_MPI

#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"

struct dsc_dist {
  dsc_backend *be; /* dsc_dist_bind's backend */
};

static const char dist_single_rebuild[] =
    "this dsc was built without MPI; install libopenmpi-dev (scripts/deps.sh) and rebuild "
    "(make) to run several processes";

dsc_status *dsc_dist_open(double timeout_s, dsc_dist **out) {
  *out = NULL;
  if (!(timeout_s > 0))
    return dsc_errorf("dsc_dist_open: the collective timeout must be > 0 s (got %g)", timeout_s);
  const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && atol(v) > 1)
      return dsc_errorf("dsc_dist_open: the launcher asked for %ld processes (%s=%s), but %s",
                        atol(v), vars[i], v, dist_single_rebuild);
  }
  dsc_dist *d = calloc(1, sizeof *d);
  if (!d) return dsc_errorf("dsc_dist_open: out of memory");
  *out = d;
  return NULL;
}

int dsc_dist_rank(const dsc_dist *d) { return 0; }
int dsc_dist_world(const dsc_dist *d) { return 1; }
int dsc_dist_local_rank(const dsc_dist *d) { return 0; }
const char *dsc_dist_describe(const dsc_dist *d) { return "single process"; }

void dist_test_set_max_count(dsc_dist *d, size_t elems) {}

dsc_status *dsc_dist_bind(dsc_dist *d, dsc_backend *be) {
  if (!d) return dsc_errorf("dsc_dist_bind: no communicator");
  dist_memory mem = DIST_MEMORY_HOST;
  DSC_TRY(dist_memory_of(be, &mem));
  d->be = be;
  return NULL;
}

static dsc_status *dist_check_bound(const dsc_dist *d, const char *what) {
  if (!d) return dsc_errorf("%s: no communicator", what);
  if (!d->be)
    return dsc_errorf("%s: no backend bound (call dsc_dist_bind before collectives on backend "
                      "memory)",
                      what);
  return NULL;
}

dsc_status *dsc_dist_allreduce(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype,
                               dsc_reduce_op op) {
  DSC_TRY(dist_check_bound(d, "allreduce"));
  return dist_check_reduce(dtype, op, "allreduce");
}

dsc_status *dsc_dist_allgather(dsc_dist *d, const void *send, void *recv, size_t bytes) {
  DSC_TRY(dist_check_bound(d, "allgather"));
  return dist_backend_copy(d->be, recv, send, bytes);
}

dsc_status *dsc_dist_broadcast(dsc_dist *d, void *buf, size_t bytes, int root) {
  DSC_TRY(dist_check_bound(d, "broadcast"));
  return dist_check_root(root, 1, "broadcast");
}

dsc_status *dsc_dist_allreduce_host(dsc_dist *d, void *buf, size_t n, dsc_dtype dtype,
                                    dsc_reduce_op op) {
  if (!d) return dsc_errorf("allreduce: no communicator");
  return dist_check_reduce(dtype, op, "allreduce");
}

dsc_status *dsc_dist_allgather_host(dsc_dist *d, const void *send, void *recv, size_t bytes) {
  if (!d) return dsc_errorf("allgather: no communicator");
  if (send != recv && bytes) memmove(recv, send, bytes);
  return NULL;
}

dsc_status *dsc_dist_broadcast_host(dsc_dist *d, void *buf, size_t bytes, int root) {
  if (!d) return dsc_errorf("broadcast: no communicator");
  return dist_check_root(root, 1, "broadcast");
}

dsc_status *dsc_dist_barrier(dsc_dist *d) {
  if (!d) return dsc_errorf("barrier: no communicator");
  return NULL;
}

void dsc_dist_abort(dsc_dist *d, int code) {}

void dsc_dist_close(dsc_dist *d) { free(d); }

#endif /* !DSC_HAVE_MPI */

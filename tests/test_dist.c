/* test_dist.c: the communicator (include/dsc/dist.h, src/dist/).
 *
 * Run plainly (make test) it checks the single-process semantics, whatever the build: with no
 * launcher variables dsc_dist_open gives rank 0 of 1, "single process", and every collective on
 * host memory and on the CPU backend's memory is an identity or a copy; bad arguments (MEAN of an
 * integer dtype, a root outside the job, no bound backend, a zero timeout) are errors. A build
 * without MPI refuses a launcher that asks for several processes.
 *
 * Under mpirun (tests/cli/test_dist.sh) it takes one of two arguments:
 *   --mpi-check  the multi-rank checks: all-reduce SUM/MEAN/MAX of F32, F64, I32, I64 with known
 *                values per rank (backend and host memory), all-gather in rank order in place and
 *                not, broadcast from root 1, buffers of more than 2^20 elements, chunked messages
 *                (max count lowered through dist_test_set_max_count), and last a deliberate
 *                timeout: rank 1 skips an all-reduce and sleeps, the others must get the timeout
 *                error after the configured 2 s; rank 1 then joins late so everybody finalizes.
 *                Each check's verdict is combined over the ranks; rank 0 prints "ok NAME" /
 *                "FAIL NAME" and the "#summary" line.
 *   --mpi-wait   for the kill test: rank 1 prints "PID <pid>", then every rank all-reduces every
 *                10 ms forever (the test kills rank 1 and expects mpirun to end the job).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "dist/dist_internal.h"
#include "dsc/dist.h"
#include "test.h"

static void unset_launcher(void) {
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("PMI_SIZE");
  unsetenv("PMIX_RANK");
}

/* ---- single process ---- */

static void test_open_single(void) {
  unset_launcher();
  dsc_dist *d = NULL;
  CHECK_OK(dsc_dist_open(30, &d));
  CHECK(d != NULL, "no communicator");
  if (!d) return;
  CHECK(dsc_dist_rank(d) == 0, "rank %d", dsc_dist_rank(d));
  CHECK(dsc_dist_world(d) == 1, "world %d", dsc_dist_world(d));
  CHECK(strcmp(dsc_dist_describe(d), "single process") == 0, "describe \"%s\"",
        dsc_dist_describe(d));
  CHECK_OK(dsc_dist_barrier(d));
  dsc_dist_abort(d, 3); /* a single process: returns */
  dsc_dist_close(d);
  dsc_dist_close(NULL);

  d = NULL;
  CHECK_ERR(dsc_dist_open(0, &d), "timeout must be > 0");
  CHECK(d == NULL, "communicator despite the error");
  CHECK_ERR(dsc_dist_open(-1, &d), "timeout must be > 0");
}

static void test_host_collectives_single(void) {
  unset_launcher();
  dsc_dist *d = NULL;
  CHECK_OK(dsc_dist_open(30, &d));
  if (!d) return;
  float f[5] = {1.5f, -2, 3, 0, 1e30f};
  double g[3] = {0.1, -7, 1e-300};
  int64_t k[3] = {INT64_MAX, -5, 1LL << 40};
  int32_t m[2] = {INT32_MIN, 7};
  float f0[5];
  memcpy(f0, f, sizeof f);
  CHECK_OK(dsc_dist_allreduce_host(d, f, 5, DSC_F32, DSC_REDUCE_SUM));
  CHECK_OK(dsc_dist_allreduce_host(d, f, 5, DSC_F32, DSC_REDUCE_MEAN));
  CHECK_OK(dsc_dist_allreduce_host(d, f, 5, DSC_F32, DSC_REDUCE_MAX));
  CHECK(memcmp(f, f0, sizeof f) == 0, "F32 changed by a one-process all-reduce");
  CHECK_OK(dsc_dist_allreduce_host(d, g, 3, DSC_F64, DSC_REDUCE_MEAN));
  CHECK(g[0] == 0.1 && g[1] == -7 && g[2] == 1e-300, "F64 changed");
  CHECK_OK(dsc_dist_allreduce_host(d, k, 3, DSC_I64, DSC_REDUCE_SUM));
  CHECK(k[0] == INT64_MAX && k[1] == -5 && k[2] == 1LL << 40, "I64 changed");
  CHECK_OK(dsc_dist_allreduce_host(d, m, 2, DSC_I32, DSC_REDUCE_MAX));
  CHECK(m[0] == INT32_MIN && m[1] == 7, "I32 changed");
  CHECK_OK(dsc_dist_allreduce_host(d, NULL, 0, DSC_F32, DSC_REDUCE_SUM));

  char send[7] = "abcdef", recv[7] = {0};
  CHECK_OK(dsc_dist_allgather_host(d, send, recv, sizeof send));
  CHECK(memcmp(recv, "abcdef", 7) == 0, "all-gather did not copy: \"%s\"", recv);
  CHECK_OK(dsc_dist_allgather_host(d, recv, recv, sizeof recv)); /* in place: rank 0's slot */
  CHECK(memcmp(recv, "abcdef", 7) == 0, "in-place all-gather changed the data");

  CHECK_OK(dsc_dist_broadcast_host(d, send, sizeof send, 0));
  CHECK(memcmp(send, "abcdef", 7) == 0, "broadcast changed the data");
  dsc_dist_close(d);
}

static void test_backend_collectives_single(void) {
  unset_launcher();
  dsc_dist *d = NULL;
  dsc_backend *be = NULL;
  CHECK_OK(dsc_dist_open(30, &d));
  CHECK_OK(dsc_backend_cpu_new(1, &be));
  if (!d || !be) {
    dsc_dist_close(d);
    if (be) be->destroy(be);
    return;
  }
  float *x = NULL;
  CHECK_ERR(dsc_dist_allreduce(d, x, 0, DSC_F32, DSC_REDUCE_SUM), "no backend bound");
  CHECK_ERR(dsc_dist_bind(d, NULL), "no backend");
  CHECK_OK(dsc_dist_bind(d, be));
  enum { N = 1000 };
  float *y = NULL;
  CHECK_OK(be->alloc(be, N * sizeof(float), (void **)&x));
  CHECK_OK(be->alloc(be, N * sizeof(float), (void **)&y));
  if (x && y) {
    float want[N];
    for (int i = 0; i < N; i++) want[i] = x[i] = (float)i * 0.25f - 17.0f;
    CHECK_OK(dsc_dist_allreduce(d, x, N, DSC_F32, DSC_REDUCE_SUM));
    CHECK_OK(dsc_dist_allreduce(d, x, N, DSC_F32, DSC_REDUCE_MEAN));
    CHECK_OK(dsc_dist_allreduce(d, x, N, DSC_F32, DSC_REDUCE_MAX));
    CHECK(memcmp(x, want, sizeof want) == 0, "backend all-reduce changed the data");
    CHECK_OK(dsc_dist_allgather(d, x, y, N * sizeof(float)));
    CHECK(memcmp(y, want, sizeof want) == 0, "backend all-gather did not copy");
    CHECK_OK(dsc_dist_allgather(d, y, y, N * sizeof(float)));
    CHECK(memcmp(y, want, sizeof want) == 0, "in-place backend all-gather changed the data");
    CHECK_OK(dsc_dist_broadcast(d, x, N * sizeof(float), 0));
    CHECK(memcmp(x, want, sizeof want) == 0, "backend broadcast changed the data");
    CHECK_ERR(dsc_dist_broadcast(d, x, N * sizeof(float), 1), "root 1 is not a rank");
  }
  be->free(be, x);
  be->free(be, y);
  CHECK_OK(dsc_dist_bind(d, be)); /* binding again is fine */
  dsc_dist_close(d);
  be->destroy(be);
}

static void test_bad_arguments(void) {
  unset_launcher();
  dsc_dist *d = NULL;
  CHECK_OK(dsc_dist_open(30, &d));
  if (!d) return;
  int64_t k[2] = {1, 2};
  int32_t m[2] = {1, 2};
  uint16_t h[2] = {1, 2};
  CHECK_ERR(dsc_dist_allreduce_host(d, k, 2, DSC_I64, DSC_REDUCE_MEAN), "MEAN needs a float dtype");
  CHECK_ERR(dsc_dist_allreduce_host(d, m, 2, DSC_I32, DSC_REDUCE_MEAN), "MEAN needs a float dtype");
  CHECK_ERR(dsc_dist_allreduce_host(d, h, 2, DSC_F16, DSC_REDUCE_SUM), "dtype F16 is not supported");
  CHECK_ERR(dsc_dist_allreduce_host(d, k, 2, DSC_I64, (dsc_reduce_op)9), "unknown reduce op");
  CHECK_ERR(dsc_dist_broadcast_host(d, k, 8, -1), "root -1 is not a rank");
  CHECK_ERR(dsc_dist_broadcast_host(d, k, 8, 1), "root 1 is not a rank");
  CHECK(k[0] == 1 && k[1] == 2 && m[0] == 1, "a rejected call changed the data");
  dsc_dist_close(d);
}

/* A build without MPI must not let several launched processes each train alone. */
static void test_launcher_without_mpi(void) {
#ifndef DSC_HAVE_MPI
  unset_launcher();
  dsc_dist *d = NULL;
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  CHECK_ERR(dsc_dist_open(30, &d), "this dsc was built without MPI; install libopenmpi-dev");
  CHECK(d == NULL, "communicator despite the refusal");
  unset_launcher();
  setenv("PMI_SIZE", "2", 1);
  CHECK_ERR(dsc_dist_open(30, &d), "built without MPI");
  unset_launcher();
  setenv("PMI_SIZE", "1", 1); /* one process asked for: fine */
  CHECK_OK(dsc_dist_open(30, &d));
  CHECK(dsc_dist_world(d) == 1, "world %d", dsc_dist_world(d));
  dsc_dist_close(d);
  unset_launcher();
#endif
}

/* ---- several processes (--mpi-check) ---- */
#ifdef DSC_HAVE_MPI

#define MPI_CHECK_TIMEOUT_S 2.0

typedef struct mpi_ctx {
  dsc_dist *d;
  dsc_backend *be;
  int rank, world;
  /* The timeout check's buffer: a collective that timed out keeps it in MPI's use until
   * dsc_dist_close (dist_mpi.c), so it lives as long as the communicator. */
  double late;
} mpi_ctx;

/* n elements of dtype in the CPU backend's memory (host memory; the backend collectives). */
static void *mpi_alloc(mpi_ctx *c, size_t bytes) {
  void *p = NULL;
  CHECK_OK(c->be->alloc(c->be, bytes, &p));
  return p;
}

/* Rank r holds a[i] = (r+1) * (i % 7) + 0.5 * i, so SUM = T*(i%7) + W*0.5*i (T = W(W+1)/2);
 * every value is a small multiple of 0.5, exact in F32 and F64 in any summation order. */
static void mpi_allreduce_float(mpi_ctx *c, int host, dsc_dtype dtype, size_t n) {
  int W = c->world;
  double T = W * (W + 1) / 2.0;
  size_t es = dsc_dtype_size(dtype);
  for (int op = DSC_REDUCE_SUM; op <= DSC_REDUCE_MAX; op++) {
    void *buf = host ? malloc(n * es) : mpi_alloc(c, n * es);
    if (!buf) return;
    for (size_t i = 0; i < n; i++) {
      double v = (c->rank + 1) * (double)(i % 7) + 0.5 * (double)(i % 1000);
      if (dtype == DSC_F32)
        ((float *)buf)[i] = (float)v;
      else
        ((double *)buf)[i] = v;
    }
    dsc_status *st = host ? dsc_dist_allreduce_host(c->d, buf, n, dtype, (dsc_reduce_op)op)
                          : dsc_dist_allreduce(c->d, buf, n, dtype, (dsc_reduce_op)op);
    CHECK_OK(st);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
      double sum = T * (double)(i % 7) + W * 0.5 * (double)(i % 1000);
      double want = op == DSC_REDUCE_SUM    ? sum
                    : op == DSC_REDUCE_MEAN ? sum / W
                                            : W * (double)(i % 7) + 0.5 * (double)(i % 1000);
      if (dtype == DSC_F32) want = (float)want;
      double got = dtype == DSC_F32 ? ((float *)buf)[i] : ((double *)buf)[i];
      if (got != want && !bad++) first = i;
    }
    CHECK(bad == 0, "%s op %d n %zu: %zu wrong, first at %zu", dsc_dtype_name(dtype), op, n, bad,
          first);
    if (host)
      free(buf);
    else
      c->be->free(c->be, buf);
  }
}

static void mpi_check_allreduce_f32(mpi_ctx *c) {
  mpi_allreduce_float(c, 0, DSC_F32, 1001);
  mpi_allreduce_float(c, 1, DSC_F32, 1001);
}

static void mpi_check_allreduce_f64(mpi_ctx *c) {
  mpi_allreduce_float(c, 0, DSC_F64, 777);
  mpi_allreduce_float(c, 1, DSC_F64, 777);
}

/* Integers beyond 32 bits: rank r holds (r+1) * 2^40 + i - r, so SUM = T*2^40 + W*i - T + W,
 * MAX = W*2^40 + i - (W-1); I32: (r+1) * 1000 - i. */
static void mpi_check_allreduce_int(mpi_ctx *c) {
  int W = c->world;
  int64_t T = (int64_t)W * (W + 1) / 2;
  enum { N = 513 };
  for (int host = 0; host < 2; host++) {
    for (int op = DSC_REDUCE_SUM; op <= DSC_REDUCE_MAX; op += 2) {
      int64_t *k = host ? malloc(N * sizeof *k) : mpi_alloc(c, N * sizeof *k);
      int32_t *m = host ? malloc(N * sizeof *m) : mpi_alloc(c, N * sizeof *m);
      if (!k || !m) return;
      for (int i = 0; i < N; i++) {
        k[i] = (int64_t)(c->rank + 1) * (1LL << 40) + i - c->rank;
        m[i] = (c->rank + 1) * 1000 - i;
      }
      if (host) {
        CHECK_OK(dsc_dist_allreduce_host(c->d, k, N, DSC_I64, (dsc_reduce_op)op));
        CHECK_OK(dsc_dist_allreduce_host(c->d, m, N, DSC_I32, (dsc_reduce_op)op));
      } else {
        CHECK_OK(dsc_dist_allreduce(c->d, k, N, DSC_I64, (dsc_reduce_op)op));
        CHECK_OK(dsc_dist_allreduce(c->d, m, N, DSC_I32, (dsc_reduce_op)op));
      }
      int bad = 0;
      for (int i = 0; i < N; i++) {
        int64_t wk = op == DSC_REDUCE_SUM ? T * (1LL << 40) + (int64_t)W * i - (T - W)
                                          : (int64_t)W * (1LL << 40) + i - (W - 1);
        int32_t wm = op == DSC_REDUCE_SUM ? (int32_t)(T * 1000 - (int64_t)W * i) : W * 1000 - i;
        bad += k[i] != wk || m[i] != wm;
      }
      CHECK(bad == 0, "%s op %d: %d wrong", host ? "host" : "backend", op, bad);
      if (host) {
        free(k);
        free(m);
      } else {
        c->be->free(c->be, k);
        c->be->free(c->be, m);
      }
    }
  }
}

static void mpi_check_mean_int_rejected(mpi_ctx *c) {
  int64_t k[2] = {1, 2};
  CHECK_ERR(dsc_dist_allreduce_host(c->d, k, 2, DSC_I64, DSC_REDUCE_MEAN), "MEAN needs a float");
  CHECK_ERR(dsc_dist_allreduce(c->d, k, 2, DSC_I64, DSC_REDUCE_MEAN), "MEAN needs a float");
  CHECK_ERR(dsc_dist_broadcast_host(c->d, k, 8, c->world), "is not a rank of this job");
  CHECK(k[0] == 1 && k[1] == 2, "a rejected call changed the data");
}

/* Byte j of rank r's block: (r * 31 + j * 7 + 1) & 255. */
static unsigned char mpi_pattern(int r, size_t j) { return (unsigned char)((r * 31 + j * 7 + 1) & 255); }

static void mpi_allgather_one(mpi_ctx *c, int host, int in_place, size_t bytes) {
  size_t total = bytes * (size_t)c->world;
  unsigned char *recv = host ? malloc(total) : mpi_alloc(c, total);
  unsigned char *send = host ? malloc(bytes) : mpi_alloc(c, bytes);
  if (!recv || !send) return;
  memset(recv, 0xEE, total);
  unsigned char *mine = in_place ? recv + (size_t)c->rank * bytes : send;
  for (size_t j = 0; j < bytes; j++) mine[j] = mpi_pattern(c->rank, j);
  CHECK_OK(host ? dsc_dist_allgather_host(c->d, mine, recv, bytes)
                : dsc_dist_allgather(c->d, mine, recv, bytes));
  size_t bad = 0;
  for (int r = 0; r < c->world; r++)
    for (size_t j = 0; j < bytes; j++) bad += recv[(size_t)r * bytes + j] != mpi_pattern(r, j);
  CHECK(bad == 0, "%s all-gather%s of %zu bytes: %zu wrong bytes", host ? "host" : "backend",
        in_place ? " in place" : "", bytes, bad);
  if (host) {
    free(recv);
    free(send);
  } else {
    c->be->free(c->be, recv);
    c->be->free(c->be, send);
  }
}

static void mpi_check_allgather(mpi_ctx *c) {
  for (int host = 0; host < 2; host++)
    for (int in_place = 0; in_place < 2; in_place++) mpi_allgather_one(c, host, in_place, 1003);
}

static void mpi_broadcast_one(mpi_ctx *c, int host, size_t bytes, int root) {
  unsigned char *buf = host ? malloc(bytes) : mpi_alloc(c, bytes);
  if (!buf) return;
  for (size_t j = 0; j < bytes; j++) buf[j] = mpi_pattern(c->rank, j);
  CHECK_OK(host ? dsc_dist_broadcast_host(c->d, buf, bytes, root)
                : dsc_dist_broadcast(c->d, buf, bytes, root));
  size_t bad = 0;
  for (size_t j = 0; j < bytes; j++) bad += buf[j] != mpi_pattern(root, j);
  CHECK(bad == 0, "%s broadcast of %zu bytes from %d: %zu wrong bytes", host ? "host" : "backend",
        bytes, root, bad);
  if (host)
    free(buf);
  else
    c->be->free(c->be, buf);
}

static void mpi_check_broadcast_root1(mpi_ctx *c) {
  mpi_broadcast_one(c, 0, 4099, 1);
  mpi_broadcast_one(c, 1, 4099, 1);
  mpi_broadcast_one(c, 1, 17, 0);
}

/* More than 2^20 elements. */
static void mpi_check_large(mpi_ctx *c) {
  size_t n = (3u << 20) + 5;
  mpi_allreduce_float(c, 0, DSC_F32, n);
  mpi_allgather_one(c, 0, 0, n * sizeof(float));
  mpi_allgather_one(c, 1, 1, n * sizeof(float));
  mpi_broadcast_one(c, 0, n * sizeof(float), 1);
}

/* Messages of at most 1000 elements: the chunking that buffers beyond INT_MAX elements need. */
static void mpi_check_chunked(mpi_ctx *c) {
  dist_test_set_max_count(c->d, 1000);
  mpi_allreduce_float(c, 1, DSC_F32, 2503);
  mpi_allreduce_float(c, 0, DSC_F64, 3000);
  for (int in_place = 0; in_place < 2; in_place++) mpi_allgather_one(c, 1, in_place, 2503);
  mpi_allgather_one(c, 0, 0, 1000);
  mpi_broadcast_one(c, 1, 2503, 1);
  dist_test_set_max_count(c->d, 0); /* back to INT_MAX */
}

static void mpi_check_barrier_describe(mpi_ctx *c) {
  CHECK_OK(dsc_dist_barrier(c->d));
  char want[64];
  snprintf(want, sizeof want, "), %d processes on 1 host(s)", c->world);
  const char *s = dsc_dist_describe(c->d);
  CHECK(strncmp(s, "MPI (", 5) == 0 && strstr(s, want), "describe \"%s\"", s);
  if (c->rank == 0) printf("  %s\n", s);
}

typedef struct mpi_check {
  const char *name;
  void (*fn)(mpi_ctx *c);
} mpi_check;

static const mpi_check mpi_checks[] = {
    {"mpi all-reduce SUM/MEAN/MAX F32 (backend and host memory)", mpi_check_allreduce_f32},
    {"mpi all-reduce SUM/MEAN/MAX F64 (backend and host memory)", mpi_check_allreduce_f64},
    {"mpi all-reduce SUM/MAX I64 beyond 2^32 and I32", mpi_check_allreduce_int},
    {"mpi MEAN of I64 and a root outside the job rejected", mpi_check_mean_int_rejected},
    {"mpi all-gather in rank order, in place and not", mpi_check_allgather},
    {"mpi broadcast from root 1", mpi_check_broadcast_root1},
    {"mpi more than 2^20 elements", mpi_check_large},
    {"mpi chunked messages", mpi_check_chunked},
    {"mpi barrier and describe", mpi_check_barrier_describe},
};

static double mpi_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Rank 1 skips an all-reduce; the others must return the timeout error after the configured
 * timeout. Rank 1 then joins late so the pending collective completes and every rank finalizes
 * cleanly in dsc_dist_close. Returns this rank's verdict (judged on the ranks that wait). */
static int mpi_check_timeout(mpi_ctx *c) {
  c->late = 1;
  if (c->rank == 1) {
    struct timespec ts = {(time_t)MPI_CHECK_TIMEOUT_S + 1, 0};
    nanosleep(&ts, NULL);
    dsc_status_free(dsc_dist_allreduce_host(c->d, &c->late, 1, DSC_F64, DSC_REDUCE_SUM));
    return 0;
  }
  test_current_failed = 0;
  double t0 = mpi_now();
  dsc_status *st = dsc_dist_allreduce_host(c->d, &c->late, 1, DSC_F64, DSC_REDUCE_SUM);
  double waited = mpi_now() - t0;
  char want[160];
  snprintf(want, sizeof want, "collective allreduce (8 bytes) did not complete within %g s on rank %d",
           MPI_CHECK_TIMEOUT_S, c->rank);
  CHECK(st && strstr(st->msg, want) && strstr(st->msg, "another rank died, hung or took another path"),
        "got \"%s\"", st ? st->msg : "success");
  dsc_status_free(st);
  /* It waited the timeout, not less (how much longer is the scheduler's business). */
  CHECK(waited >= MPI_CHECK_TIMEOUT_S, "returned after %.3f s", waited);
  CHECK_ERR(dsc_dist_barrier(c->d), "an earlier collective failed");
  if (c->rank == 0)
    printf("%s mpi timeout: rank 1 skipped an all-reduce, rank 0 got the error after %.2f s "
           "(timeout %g s)\n",
           test_current_failed ? "FAIL" : "ok", waited, MPI_CHECK_TIMEOUT_S);
  return test_current_failed;
}

static int mpi_check_main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mpi_ctx c = {0};
  dsc_status *st = dsc_dist_open(MPI_CHECK_TIMEOUT_S, &c.d);
  if (!st) st = dsc_backend_cpu_new(1, &c.be);
  if (!st) st = dsc_dist_bind(c.d, c.be);
  if (st) {
    printf("FAIL mpi set-up: %s\n#summary 0 passed, 1 failed\n", st->msg);
    dsc_status_free(st);
    dsc_dist_abort(c.d, 1);
    return 1;
  }
  c.rank = dsc_dist_rank(c.d);
  c.world = dsc_dist_world(c.d);
  if (c.world < 2) {
    printf("FAIL mpi checks need at least 2 processes (mpirun -np 2), got %d\n"
           "#summary 0 passed, 1 failed\n",
           c.world);
    dsc_dist_close(c.d);
    c.be->destroy(c.be);
    return 1;
  }
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof mpi_checks / sizeof mpi_checks[0]; i++) {
    test_current_failed = 0;
    mpi_checks[i].fn(&c);
    int32_t verdict = test_current_failed;
    if (verdict) printf("  (the check above failed on rank %d)\n", c.rank);
    st = dsc_dist_allreduce_host(c.d, &verdict, 1, DSC_I32, DSC_REDUCE_MAX);
    if (st) {
      printf("FAIL %s: combining the verdicts on rank %d: %s\n", mpi_checks[i].name, c.rank,
             st->msg);
      dsc_status_free(st);
      dsc_dist_abort(c.d, 1);
      return 1;
    }
    if (c.rank == 0) printf("%s %s\n", verdict ? "FAIL" : "ok", mpi_checks[i].name);
    verdict ? failed++ : passed++;
  }
  int own = mpi_check_timeout(&c);
  own ? failed++ : passed++;
  if (c.rank == 0) printf("#summary %d passed, %d failed\n", passed, failed);
  dsc_dist_close(c.d);
  c.be->destroy(c.be);
  return failed ? 1 : 0;
}
#else
/* A build without MPI (make MPI=0, or no mpicc) has nothing to check: skipped, not failed. */
static int mpi_check_main(void) {
  printf("skip mpi checks: this dsc was built without MPI (make MPI=0, or no mpicc)\n");
  printf("#summary 0 passed, 0 failed, 1 skipped\n");
  return 0;
}
#endif

/* --mpi-wait: all-reduce every 10 ms until killed; a failed collective ends the job. */
static int mpi_wait_main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  dsc_dist *d = NULL;
  dsc_status *st = dsc_dist_open(60, &d);
  if (!st && dsc_dist_rank(d) == 1) printf("PID %ld\n", (long)getpid());
  double x = 1; /* outlives a failed collective, which may still write it until the abort */
  while (!st) {
    st = dsc_dist_allreduce_host(d, &x, 1, DSC_F64, DSC_REDUCE_SUM);
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  fprintf(stderr, "test_dist --mpi-wait: %s\n", st->msg);
  dsc_status_free(st);
  dsc_dist_abort(d, 1);
  dsc_dist_close(d);
  return 1;
}

static const dsc_test tests[] = {
    {"open_single", test_open_single},
    {"host_collectives_single", test_host_collectives_single},
    {"backend_collectives_single", test_backend_collectives_single},
    {"bad_arguments", test_bad_arguments},
    {"launcher_without_mpi", test_launcher_without_mpi},
};

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--mpi-check") == 0) return mpi_check_main();
  if (argc > 1 && strcmp(argv[1], "--mpi-wait") == 0) return mpi_wait_main();
  return test_main(tests, (int)(sizeof tests / sizeof tests[0]), argc, argv);
}

/* cpu_backend.c: the fast CPU backend ("cpu"): its op table and constructor, thread
 * settings, host memory and the backend-owned scratch buffers. The ops live in cpu_conv.c
 * (oneDNN), cpu_bn.c, cpu_pool.c, cpu_elementwise.c, cpu_optim.c, cpu_seg.c (OpenMP) and
 * cpu_dense.c (oneDNN's sgemm); conventions in cpu_ops.h and backend.h. bn_update_running and the
 * argument checks are shared with the reference backend (backend_check.c).
 *
 * Each instance owns one oneDNN CPU engine and stream, created here, and no global state
 * of its own. But its thread count is set through omp_set_num_threads, which sets the
 * calling thread's OpenMP team size (what oneDNN follows too) and is therefore in effect
 * process-wide when one thread drives the backend. It is re-applied at the start of every
 * op, so instances with different thread counts coexist correctly as long as they are not
 * used at the same time from different threads. Every thread the backend uses is an
 * OpenMP thread: there is no second pool (no OpenBLAS, see cpu_dense.c).
 *
 * Memory is host memory: alloc is a zero-filled aligned_alloc with 64-byte alignment (size
 * rounded up to a multiple of 64, at least 64); upload/download are memcpy. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

#define CPU_ALIGN 64

void cpu_threads_enter(cpu_impl *impl) {
  if (omp_get_max_threads() != impl->threads) omp_set_num_threads(impl->threads);
}

/* aligned_alloc of `bytes` rounded up to a multiple of CPU_ALIGN (at least CPU_ALIGN);
 * the rounded size goes to *rounded_out when it is not NULL. */
static dsc_status *cpu_aligned(size_t bytes, void **out, size_t *rounded_out) {
  size_t rounded = bytes == 0 ? CPU_ALIGN : bytes;
  if (rounded > SIZE_MAX - (CPU_ALIGN - 1)) return dsc_errorf("%zu bytes is too large", bytes);
  rounded = (rounded + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
  void *p = aligned_alloc(CPU_ALIGN, rounded);
  if (!p) return dsc_errorf("out of memory allocating %zu bytes", bytes);
  *out = p;
  if (rounded_out) *rounded_out = rounded;
  return NULL;
}

dsc_status *cpu_buffer_reserve(cpu_buffer *b, size_t bytes, const char *what) {
  if (bytes <= b->bytes) return NULL;
  void *p = NULL;
  DSC_TRY(dsc_status_wrap(cpu_aligned(bytes, &p, NULL), "cpu backend %s", what));
  free(b->p);
  b->p = p;
  b->bytes = bytes;
  return NULL;
}

dsc_status *cpu_work_get(cpu_impl *impl, size_t bytes, void **out) {
  DSC_TRY(cpu_buffer_reserve(&impl->work, bytes, "work buffer"));
  *out = impl->work.p;
  return NULL;
}

/* ---- memory ---- */

static dsc_status *cpu_alloc(dsc_backend *be, size_t bytes, void **out) {
  if (!out) return dsc_errorf("alloc: out must not be NULL");
  *out = NULL;
  void *p = NULL;
  size_t rounded = 0;
  DSC_TRY(dsc_status_wrap(cpu_aligned(bytes, &p, &rounded), "alloc"));
  memset(p, 0, rounded);
  *out = p;
  return NULL;
}

static void cpu_free(dsc_backend *be, void *p) { free(p); }

static dsc_status *cpu_upload(dsc_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!dst || !host_src) return dsc_errorf("upload: NULL pointer for %zu bytes", bytes);
  memcpy(dst, host_src, bytes);
  return NULL;
}

static dsc_status *cpu_download(dsc_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!host_dst || !src) return dsc_errorf("download: NULL pointer for %zu bytes", bytes);
  memcpy(host_dst, src, bytes);
  return NULL;
}

static dsc_status *cpu_zero(dsc_backend *be, float *x, size_t n) {
  if (n == 0) return NULL;
  if (!x) return dsc_errorf("zero: NULL pointer for %zu floats", n);
  cpu_impl *impl = cpu_impl_of(be);
  cpu_threads_enter(impl);
  int parts = n >= ((size_t)1 << 16) ? impl->threads : 1;
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
  for (int t = 0; t < parts; t++) {
    size_t lo, hi;
    cpu_split(n, parts, t, &lo, &hi);
    memset(x + lo, 0, (hi - lo) * sizeof *x);
  }
  return NULL;
}

/* ---- constructor and destructor ---- */

static void cpu_destroy(dsc_backend *be) {
  if (!be) return;
  cpu_impl *impl = cpu_impl_of(be);
  if (impl) {
    cpu_conv_cache_free(impl);
    if (impl->stream) dnnl_stream_destroy(impl->stream);
    if (impl->engine) dnnl_engine_destroy(impl->engine);
    free(impl->scratch.p);
    free(impl->weights.p);
    free(impl->work.p);
    free(impl);
  }
  free(be);
}

dsc_status *dsc_backend_cpu_new(int threads, dsc_backend **out) {
  if (!out) return dsc_errorf("dsc_backend_cpu_new: out must not be NULL");
  *out = NULL;
  dsc_backend *be = calloc(1, sizeof *be);
  cpu_impl *impl = calloc(1, sizeof *impl);
  if (!be || !impl) {
    free(be);
    free(impl);
    return dsc_errorf("dsc_backend_cpu_new: out of memory");
  }
  be->impl = impl;
  be->name = "cpu";
  be->destroy = cpu_destroy;
  impl->threads = threads > 0 ? threads : omp_get_num_procs();
  if (impl->threads < 1) impl->threads = 1;
  cpu_threads_enter(impl);

  dnnl_status_t st = dnnl_engine_create(&impl->engine, dnnl_cpu, 0);
  if (st == dnnl_success) st = dnnl_stream_create(&impl->stream, impl->engine,
                                                  dnnl_stream_default_flags);
  if (st != dnnl_success) {
    cpu_destroy(be);
    return dsc_errorf("dsc_backend_cpu_new: oneDNN CPU engine/stream creation failed (status %d)",
                      (int)st);
  }

  be->alloc = cpu_alloc;
  be->free = cpu_free;
  be->upload = cpu_upload;
  be->download = cpu_download;
  be->zero = cpu_zero;
  be->conv2d_forward = cpu_conv2d_forward;
  be->conv2d_backward = cpu_conv2d_backward;
  be->bn_forward_train = cpu_bn_forward_train;
  be->bn_forward_eval = cpu_bn_forward_eval;
  be->bn_backward = cpu_bn_backward;
  be->bn_update_running = backend_bn_update_running_host;
  be->relu_forward = cpu_relu_forward;
  be->relu_backward = cpu_relu_backward;
  be->add_inplace = cpu_add_inplace;
  be->maxpool_forward = cpu_maxpool_forward;
  be->maxpool_backward = cpu_maxpool_backward;
  be->gap_forward = cpu_gap_forward;
  be->gap_backward = cpu_gap_backward;
  be->linear_forward = cpu_linear_forward;
  be->linear_backward = cpu_linear_backward;
  be->gemm = cpu_gemm;
  be->resize_bilinear_forward = cpu_resize_bilinear_forward;
  be->resize_bilinear_backward = cpu_resize_bilinear_backward;
  be->channel_scale = cpu_channel_scale;
  be->softmax_ce = cpu_softmax_ce;
  be->sgd_step = cpu_sgd_step;
  be->ema = cpu_ema;
  be->synchronize = backend_synchronize_host;
  *out = be;
  return NULL;
}

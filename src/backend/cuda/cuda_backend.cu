/* cuda_backend.cu: the CUDA backend ("cuda"): its constructor, the two op tables (backend.h's
 * dsc_backend and ssl_ops.h's dsc_ssl_ops), device memory, host<->device copies, synchronize and
 * the per-purpose scratch slots (cuda_scratch). The ops live in cuda_conv.cu (cuDNN),
 * cuda_dense.cu (cuBLAS), cuda_bn.cu, cuda_pool.cu, cuda_elementwise.cu, cuda_seg.cu,
 * cuda_ssl_contrast.cu and cuda_ssl_cluster.cu; conventions in cuda_internal.h and backend.h.
 *
 * One instance owns one non-blocking stream on one GPU; its cuBLAS and cuDNN handles are bound
 * to that stream, so every op is queued in issue order and nothing waits for the GPU except
 * download, synchronize, scratch growth, free and destroy.
 *
 * Precision (METHOD.md §5, "Precision"): fp32 mode sets cuBLAS to CUBLAS_DEFAULT_MATH, which
 * never uses TF32 for fp32 GEMMs (cuda_conv.cu keeps cuDNN on FMA math); bf16 mode lets cuBLAS
 * use TF32 tensor cores (CUBLAS_TF32_TENSOR_OP_MATH) and cuda_conv.cu feeds cuDNN bf16 copies.
 *
 * Memory: alloc is cudaMalloc of the size rounded up to a multiple of 64 bytes (at least 64;
 * cudaMalloc itself aligns to 256), zero-filled on the stream, so the fill is ordered before any
 * later op of this backend. upload copies through two pinned staging buffers used in turn: each
 * chunk (at most 64 MiB) waits for the last copy out of its buffer, is memcpy'd in, and is sent
 * with cudaMemcpyAsync on the stream; the caller may reuse its host buffer at once, and the copy
 * is queued behind (and overlaps with the host side of) the work already issued. download is a
 * stream copy followed by a stream synchronize (any host memory). free waits for the stream
 * before cudaFree, so memory still read by queued work is never released under it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_check.h"
#include "backend/cuda/cuda_internal.h"

#define CUDA_ALLOC_ALIGN 64
#define CUDA_UPLOAD_CHUNK ((size_t)64 << 20) /* largest single staged copy */
#define CUDA_PINNED_MIN ((size_t)1 << 20)    /* smallest staging buffer */

/* ---- scratch slots ---- */

dsc_status *cuda_scratch(cuda_impl *impl, cuda_slot slot, size_t bytes, void **out) {
  if (!out) return dsc_errorf("cuda_scratch: out must not be NULL");
  *out = NULL;
  if ((int)slot < 0 || (int)slot >= (int)CUDA_SLOT_COUNT)
    return dsc_errorf("cuda_scratch: slot %d out of range", (int)slot);
  cuda_buffer *b = &impl->slot[slot];
  if (b->p && bytes <= b->bytes) {
    *out = b->p;
    return NULL;
  }
  if (bytes > SIZE_MAX / 2) return dsc_errorf("cuda_scratch: %zu bytes is too large", bytes);
  /* 1/8 headroom plus rounding to 256 bytes, so that slowly growing requests do not make
   * the slot grow (and the stream wait) again at every call. */
  size_t want = bytes + bytes / 8 + 256;
  want = (want + 255) / 256 * 256;
  if (b->p) {
    /* Queued work may still read the old buffer. */
    CUDA_TRY(cudaStreamSynchronize(impl->stream));
    CUDA_TRY(cudaFree(b->p));
    b->p = NULL;
    b->bytes = 0;
  }
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); /* so a later cudaPeekAtLastError does not see it again */
    return DSC_ERR_AT("cuda scratch slot %d: cudaMalloc of %zu bytes failed: %s (%s)", (int)slot,
                      want, cudaGetErrorName(e), cudaGetErrorString(e));
  }
  b->p = p;
  b->bytes = want;
  *out = p;
  return NULL;
}

/* ---- memory ---- */

static dsc_status *cuda_alloc(dsc_backend *be, size_t bytes, void **out) {
  if (!out) return dsc_errorf("alloc: out must not be NULL");
  *out = NULL;
  cuda_impl *impl = cuda_impl_of(be);
  size_t rounded = bytes == 0 ? CUDA_ALLOC_ALIGN : bytes;
  if (rounded > SIZE_MAX - (CUDA_ALLOC_ALIGN - 1))
    return dsc_errorf("alloc: %zu bytes is too large", bytes);
  rounded = (rounded + CUDA_ALLOC_ALIGN - 1) / CUDA_ALLOC_ALIGN * CUDA_ALLOC_ALIGN;
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, rounded);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return dsc_errorf("alloc: cudaMalloc of %zu bytes failed: %s (%s)", bytes,
                      cudaGetErrorName(e), cudaGetErrorString(e));
  }
  e = cudaMemsetAsync(p, 0, rounded, impl->stream);
  if (e != cudaSuccess) {
    cudaFree(p);
    return DSC_ERR_AT("alloc: zero fill of %zu bytes failed: %s (%s)", rounded,
                      cudaGetErrorName(e), cudaGetErrorString(e));
  }
  *out = p;
  return NULL;
}

static void cuda_free(dsc_backend *be, void *p) {
  if (!p) return;
  cuda_impl *impl = cuda_impl_of(be);
  /* Errors cannot be returned here; a failed wait surfaces at the next checked call. */
  (void)cudaStreamSynchronize(impl->stream);
  (void)cudaFree(p);
}

static dsc_status *cuda_upload(dsc_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!dst || !host_src) return dsc_errorf("upload: NULL pointer for %zu bytes", bytes);
  cuda_impl *impl = cuda_impl_of(be);
  const char *src = (const char *)host_src;
  char *d = (char *)dst;
  size_t done = 0;
  while (done < bytes) {
    const size_t chunk = bytes - done < CUDA_UPLOAD_CHUNK ? bytes - done : CUDA_UPLOAD_CHUNK;
    const int i = impl->pinned_next;
    impl->pinned_next = 1 - i;
    /* The GPU may still be copying this buffer's previous contents. */
    CUDA_TRY(cudaEventSynchronize(impl->pinned_done[i]));
    cuda_buffer *pb = &impl->pinned[i];
    if (pb->bytes < chunk) {
      size_t want = CUDA_PINNED_MIN;
      while (want < chunk) want *= 2; /* chunk <= 64 MiB: no overflow */
      if (pb->p) CUDA_TRY(cudaFreeHost(pb->p));
      pb->p = NULL;
      pb->bytes = 0;
      void *p = NULL;
      CUDA_TRY(cudaMallocHost(&p, want));
      pb->p = p;
      pb->bytes = want;
    }
    memcpy(pb->p, src + done, chunk);
    CUDA_TRY(cudaMemcpyAsync(d + done, pb->p, chunk, cudaMemcpyHostToDevice, impl->stream));
    CUDA_TRY(cudaEventRecord(impl->pinned_done[i], impl->stream));
    done += chunk;
  }
  return NULL;
}

static dsc_status *cuda_download(dsc_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return NULL;
  if (!host_dst || !src) return dsc_errorf("download: NULL pointer for %zu bytes", bytes);
  cuda_impl *impl = cuda_impl_of(be);
  CUDA_TRY(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, impl->stream));
  CUDA_TRY(cudaStreamSynchronize(impl->stream));
  return NULL;
}

static dsc_status *cuda_zero(dsc_backend *be, float *x, size_t n) {
  if (n == 0) return NULL;
  if (!x) return dsc_errorf("zero: NULL pointer for %zu floats", n);
  if (n > SIZE_MAX / sizeof(float)) return dsc_errorf("zero: %zu floats is too many", n);
  cuda_impl *impl = cuda_impl_of(be);
  CUDA_TRY(cudaMemsetAsync(x, 0, n * sizeof(float), impl->stream));
  return NULL;
}

static dsc_status *cuda_device_memory_used(dsc_backend *be, size_t *bytes) {
  size_t free_b = 0, total_b = 0;
  CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
  *bytes = total_b - free_b;
  return NULL;
}

static dsc_status *cuda_synchronize(dsc_backend *be) {
  CUDA_TRY(cudaStreamSynchronize(cuda_impl_of(be)->stream));
  return NULL;
}

/* ---- op tables ---- */

/* In dsc_ssl_ops' field order (ssl_ops.h); every pointer type differs, so a misplaced entry
 * does not compile. */
static const dsc_ssl_ops cuda_ssl_ops = {
    cuda_ssl_copy,                 /* copy */
    cuda_ssl_gather_rows,          /* gather_rows */
    cuda_ssl_enqueue,              /* enqueue */
    cuda_ssl_pool_norm,            /* pool_norm */
    cuda_ssl_l2norm_rows,          /* l2norm_rows */
    cuda_ssl_l2norm_rows_backward, /* l2norm_rows_backward */
    cuda_ssl_match,                /* match */
    cuda_ssl_neighbors,            /* neighbors */
    cuda_ssl_infonce,              /* infonce */
    cuda_ssl_infonce_heads,        /* infonce_heads */
    cuda_ssl_triplet,              /* triplet */
    cuda_ssl_kmeans_init,          /* kmeans_init */
    cuda_ssl_kmeans_run,           /* kmeans_run */
    cuda_ssl_loss_kmeans,          /* loss_kmeans */
    cuda_ssl_loss_proto,           /* loss_proto */
    cuda_ssl_nonfinite,            /* nonfinite */
};

/* ---- constructor and destructor ---- */

/* Releases everything the instance holds; safe on a partly constructed one (NULL handles are
 * skipped). Errors are ignored: nothing can be reported from here. */
static void cuda_destroy(dsc_backend *be) {
  if (!be) return;
  cuda_impl *impl = cuda_impl_of(be);
  if (impl) {
    if (impl->stream) (void)cudaStreamSynchronize(impl->stream);
    cuda_conv_cache_free(impl);
    for (int i = 0; i < (int)CUDA_SLOT_COUNT; i++)
      if (impl->slot[i].p) (void)cudaFree(impl->slot[i].p);
    for (int i = 0; i < 2; i++) {
      if (impl->pinned[i].p) (void)cudaFreeHost(impl->pinned[i].p);
      if (impl->pinned_done[i]) (void)cudaEventDestroy(impl->pinned_done[i]);
    }
    if (impl->cudnn) (void)cudnnDestroy(impl->cudnn);
    if (impl->cublas) (void)cublasDestroy(impl->cublas);
    if (impl->stream) (void)cudaStreamDestroy(impl->stream);
    free(impl);
  }
  free(be);
}

/* Device selection, stream, library handles and staging events. */
static dsc_status *cuda_init(cuda_impl *impl, int device) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return dsc_errorf(
        "dsc_backend_cuda_new: no usable CUDA device (no GPU, or the driver is too old for "
        "this build): %s (%s)",
        cudaGetErrorName(e), cudaGetErrorString(e));
  }
  if (count < 1) return dsc_errorf("dsc_backend_cuda_new: no CUDA device found");
  if (device >= count)
    return dsc_errorf("dsc_backend_cuda_new: device %d is out of range: there %s %d CUDA device%s "
                      "(0..%d)",
                      device, count == 1 ? "is" : "are", count, count == 1 ? "" : "s",
                      count - 1);
  impl->device = device;
  CUDA_TRY(cudaSetDevice(device));
  int major = 0, minor = 0;
  CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major < 8)
    return dsc_errorf("dsc_backend_cuda_new: device %d has compute capability %d.%d; this "
                      "backend needs 8.0 or newer (bf16 kernels)",
                      device, major, minor);

  CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  CUBLAS_TRY(cublasCreate(&impl->cublas));
  CUBLAS_TRY(cublasSetStream(impl->cublas, impl->stream));
  CUBLAS_TRY(cublasSetMathMode(impl->cublas,
                               impl->bf16 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  CUDNN_TRY(cudnnCreate(&impl->cudnn));
  CUDNN_TRY(cudnnSetStream(impl->cudnn, impl->stream));
  for (int i = 0; i < 2; i++)
    CUDA_TRY(cudaEventCreateWithFlags(&impl->pinned_done[i], cudaEventDisableTiming));
  impl->pinned_next = 0;
  return NULL;
}

extern "C" dsc_status *dsc_backend_cuda_new(int device, int bf16, dsc_backend **out) {
  if (!out) return dsc_errorf("dsc_backend_cuda_new: out must not be NULL");
  *out = NULL;
  dsc_backend *be = (dsc_backend *)calloc(1, sizeof *be);
  cuda_impl *impl = (cuda_impl *)calloc(1, sizeof *impl);
  if (!be || !impl) {
    free(be);
    free(impl);
    return dsc_errorf("dsc_backend_cuda_new: out of memory");
  }
  be->impl = impl;
  be->name = "cuda";
  be->destroy = cuda_destroy;
  impl->bf16 = bf16 ? 1 : 0;
  dsc_status *st = cuda_init(impl, device < 0 ? 0 : device);
  if (st) {
    cuda_destroy(be);
    return st;
  }

  be->ssl = &cuda_ssl_ops;
  be->synchronize = cuda_synchronize;
  be->device_memory_used = cuda_device_memory_used;
  be->alloc = cuda_alloc;
  be->free = cuda_free;
  be->upload = cuda_upload;
  be->download = cuda_download;
  be->zero = cuda_zero;
  be->conv2d_forward = cuda_conv2d_forward;
  be->conv2d_backward = cuda_conv2d_backward;
  be->bn_forward_train = cuda_bn_forward_train;
  be->bn_forward_eval = cuda_bn_forward_eval;
  be->bn_backward = cuda_bn_backward;
  be->bn_update_running = cuda_bn_update_running;
  be->relu_forward = cuda_relu_forward;
  be->relu_backward = cuda_relu_backward;
  be->add_inplace = cuda_add_inplace;
  be->maxpool_forward = cuda_maxpool_forward;
  be->maxpool_backward = cuda_maxpool_backward;
  be->gap_forward = cuda_gap_forward;
  be->gap_backward = cuda_gap_backward;
  be->linear_forward = cuda_linear_forward;
  be->linear_backward = cuda_linear_backward;
  be->gemm = cuda_gemm;
  be->resize_bilinear_forward = cuda_resize_bilinear_forward;
  be->resize_bilinear_backward = cuda_resize_bilinear_backward;
  be->channel_scale = cuda_channel_scale;
  be->softmax_ce = cuda_softmax_ce;
  be->sgd_step = cuda_sgd_step;
  be->ema = cuda_ema;
  *out = be;
  return NULL;
}

extern "C" int dsc_backend_cuda_compiled(void) { return 1; }

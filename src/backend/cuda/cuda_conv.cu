/* cuda_conv.cu: the CUDA backend's 2-D convolution on cuDNN (legacy cudnnConvolution* API),
 * with a cache of descriptors and chosen algorithms (conventions in cuda_internal.h and
 * backend.h). Computes the function of src/backend/ref/ref_conv.c: output (oy,ox) reads input
 * (oy*stride - pad + ky*dilation, ox*stride - pad + kx*dilation), zero outside the image, cross
 * correlation (no kernel flip), groups 1; y = conv + b; dx = (overwrite, NULL skips);
 * dw += ; db += sum of dy over (n, oy, ox) (NULL skips).
 *
 * Layouts: x, dx (n,h,w,ci) and y, dy (n,oh,ow,co) are used in place as CUDNN_TENSOR_NHWC
 * (descriptor dims n, c, h, w). The weights arrive in PyTorch's OIHW and may change between
 * calls, so each call transposes them into a KRSC copy (cuDNN's NHWC filter layout, the one its
 * fast NHWC kernels take) in CUDA_SLOT_CONV_W16; the weight gradient is computed into a KRSC
 * buffer (the second half of the same slot) and a kernel transposes it back while ADDING it
 * into the caller's OIHW dw.
 *
 * Precision (METHOD.md §5, "Precision"):
 *  - fp32 mode: fp32 tensors, compute type float, CUDNN_FMA_MATH (never TF32; algorithms
 *    reporting a tensor-op math type are refused).
 *  - bf16 mode: x (and dy) are converted to bf16 copies (cuda_to_bf16: round to nearest even)
 *    in CUDA_SLOT_CONV_X16 / CUDA_SLOT_CONV_D16, the KRSC weight copy is bf16, cuDNN runs with
 *    bf16 tensors, float compute type and tensor-op math, and its bf16 outputs (y, dx in
 *    CUDA_SLOT_CONV_Y16, dw KRSC) are converted back to fp32: y and dx overwrite, dw adds.
 *    Accumulation inside cuDNN is fp32; the outputs carry bf16 rounding.
 *
 * Algorithms: per distinct (shape, direction, precision) one cache entry holds the tensor,
 * filter and convolution descriptors and the algorithm picked once: the first result of cuDNN's
 * heuristics (cudnnGet*Algorithm_v7) with status success, CUDNN_DETERMINISTIC and, in fp32 mode,
 * a math type that is not tensor-op; or, with DSC_CUDNN_FIND=1 in the environment, the fastest
 * such result of cudnnFind*Algorithm (timed; the variants that allocate their own buffers, so the
 * caller's memory is never touched). The convolution descriptor then takes the chosen result's math type (bf16
 * mode) or stays on CUDNN_FMA_MATH (fp32 mode, where CUDNN_DEFAULT_MATH would permit TF32).
 * The heuristic choice is the same in every process on one GPU model and cuDNN version, so a
 * resumed run is bitwise equal to an uninterrupted one; cudnnFind's timed choice can differ
 * between processes (another deterministic algorithm, other rounding). The
 * workspace comes from CUDA_SLOT_CONV_WS. The cache is a linked list searched linearly (a
 * ResNet has a few dozen shapes).
 *
 * Bias add is our own kernel; the bias gradient is cuda_colsum_add (cuda_dense.cu), a deterministic
 * two-stage column sum of dy in double, like the reference's double sum up to the association of
 * double adds. Its partial sums live in CUDA_SLOT_CONV_WS, which is queued before the cuDNN call that reuses
 * the slot. Where rounding differs from ref_conv.c: cuDNN sums in fp32 (in an order of its own)
 * where the reference sums in double, and the bias is added to the rounded fp32 convolution. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend_check.h"
#include "backend/cuda/cuda_internal.h"

#define CONV_THREADS 256
#define CONV_ALIGN 256 /* byte alignment of the second region of a scratch slot */
#define CONV_MAX_ALGOS 32

typedef enum conv_dir { CONV_FWD = 0, CONV_BWD_DATA = 1, CONV_BWD_FILTER = 2 } conv_dir;

static const char *const conv_dir_name[3] = {"forward", "backward data", "backward filter"};

typedef struct conv_entry {
  struct conv_entry *next;
  dsc_conv_shape s;
  conv_dir dir;
  int bf16;
  cudnnTensorDescriptor_t x_desc, y_desc; /* x/dx and y/dy */
  cudnnFilterDescriptor_t w_desc;         /* w/dw, KRSC */
  cudnnConvolutionDescriptor_t conv_desc;
  int algo;        /* a cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t, by dir */
  size_t ws_bytes; /* workspace the chosen algorithm needs */
} conv_entry;

struct cuda_conv_cache {
  conv_entry *head;
};

/* ---- kernels ---- */

/* wk (co,kh,kw,ci) = w (co,ci,kh,kw), one output element per thread step (writes coalesced). */
static __global__ void conv_w_to_krsc_f32(float *wk, const float *w, int co, int ci, int kh,
                                          int kw) {
  const int64_t total = (int64_t)co * ci * kh * kw;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = idx;
    const int64_t i = t % ci;
    t /= ci;
    const int64_t sx = t % kw;
    t /= kw;
    const int64_t r = t % kh;
    const int64_t o = t / kh;
    wk[idx] = w[((o * ci + i) * kh + r) * kw + sx];
  }
}

/* The same into bf16 (round to nearest even). */
static __global__ void conv_w_to_krsc_bf16(__nv_bfloat16 *wk, const float *w, int co, int ci,
                                           int kh, int kw) {
  const int64_t total = (int64_t)co * ci * kh * kw;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = idx;
    const int64_t i = t % ci;
    t /= ci;
    const int64_t sx = t % kw;
    t /= kw;
    const int64_t r = t % kh;
    const int64_t o = t / kh;
    wk[idx] = __float2bfloat16_rn(w[((o * ci + i) * kh + r) * kw + sx]);
  }
}

/* dw (co,ci,kh,kw) += dwk (co,kh,kw,ci), one dw element per thread step (each element is
 * read and written by exactly one thread: no race). */
static __global__ void conv_krsc_add_f32(float *dw, const float *dwk, int co, int ci, int kh,
                                         int kw) {
  const int64_t total = (int64_t)co * ci * kh * kw;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = idx;
    const int64_t sx = t % kw;
    t /= kw;
    const int64_t r = t % kh;
    t /= kh;
    const int64_t i = t % ci;
    const int64_t o = t / ci;
    dw[idx] += dwk[((o * kh + r) * kw + sx) * ci + i];
  }
}

/* The same from a bf16 gradient. */
static __global__ void conv_krsc_add_bf16(float *dw, const __nv_bfloat16 *dwk, int co, int ci,
                                          int kh, int kw) {
  const int64_t total = (int64_t)co * ci * kh * kw;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = idx;
    const int64_t sx = t % kw;
    t /= kw;
    const int64_t r = t % kh;
    t /= kh;
    const int64_t i = t % ci;
    const int64_t o = t / ci;
    dw[idx] += __bfloat162float(dwk[((o * kh + r) * kw + sx) * ci + i]);
  }
}

/* y[p*c + j] += b[j] for every pixel row p < rows. */
static __global__ void conv_bias_add(float *y, const float *b, int64_t rows, int c) {
  const int64_t total = rows * (int64_t)c;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] += b[i % c];
}

/* ---- host helpers ---- */

static size_t conv_round_up(size_t bytes) {
  return (bytes + CONV_ALIGN - 1) / CONV_ALIGN * CONV_ALIGN;
}

static const char *conv_describe(const dsc_conv_shape *s, char *buf, size_t len) {
  snprintf(buf, len, "n=%d h=%d w=%d c_in=%d c_out=%d k=%dx%d stride=%d pad=%d dilation=%d",
           s->n, s->h, s->w, s->c_in, s->c_out, s->kh, s->kw, s->stride, s->pad, s->dilation);
  return buf;
}

static int conv_shape_equal(const dsc_conv_shape *a, const dsc_conv_shape *b) {
  return a->n == b->n && a->h == b->h && a->w == b->w && a->c_in == b->c_in &&
         a->c_out == b->c_out && a->kh == b->kh && a->kw == b->kw && a->stride == b->stride &&
         a->pad == b->pad && a->dilation == b->dilation;
}

/* Whether a cudnnFind result may be used (see the file comment). */
static int conv_usable(cudnnStatus_t status, cudnnDeterminism_t det, cudnnMathType_t math,
                       int bf16) {
  if (status != CUDNN_STATUS_SUCCESS || det != CUDNN_DETERMINISTIC) return 0;
  if (!bf16 && (math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
    return 0;
  return 1;
}

static void conv_entry_destroy(conv_entry *e) {
  if (!e) return;
  if (e->x_desc) (void)cudnnDestroyTensorDescriptor(e->x_desc);
  if (e->y_desc) (void)cudnnDestroyTensorDescriptor(e->y_desc);
  if (e->w_desc) (void)cudnnDestroyFilterDescriptor(e->w_desc);
  if (e->conv_desc) (void)cudnnDestroyConvolutionDescriptor(e->conv_desc);
  free(e);
}

void cuda_conv_cache_free(cuda_impl *impl) {
  if (!impl || !impl->conv_cache) return;
  conv_entry *e = impl->conv_cache->head;
  while (e) {
    conv_entry *next = e->next;
    conv_entry_destroy(e);
    e = next;
  }
  free(impl->conv_cache);
  impl->conv_cache = NULL;
}

/* An error listing the cudnnFind results when none is usable. */
static dsc_status *conv_no_algo(const conv_entry *e, int returned, const int *algo,
                                const cudnnStatus_t *status, const cudnnDeterminism_t *det,
                                const cudnnMathType_t *math) {
  char list[512];
  size_t used = 0;
  list[0] = '\0';
  for (int i = 0; i < returned && used < sizeof list; i++) {
    int k = snprintf(list + used, sizeof list - used, "%s algo %d: status %d det %d math %d",
                     i ? ";" : "", algo[i], (int)status[i], (int)det[i], (int)math[i]);
    if (k < 0) break;
    used += (size_t)k;
  }
  return DSC_ERR_AT("cuDNN offers no usable %s algorithm (success, deterministic%s) among %d: %s",
                    conv_dir_name[e->dir], e->bf16 ? "" : ", not tensor-op", returned, list);
}

/* The three directions' perf structs have the same fields: copy them into the common arrays. */
#define CONV_COPY_PERF(perf)                   \
  for (int i = 0; i < returned; i++) {         \
    algo[i] = (int)(perf)[i].algo;             \
    status[i] = (perf)[i].status;              \
    det[i] = (perf)[i].determinism;            \
    math[i] = (perf)[i].mathType;              \
    time[i] = (perf)[i].time;                  \
    memory[i] = (perf)[i].memory;              \
  }

/* Chooses the algorithm of e's direction (heuristics or cudnnFind) and stores it, its math type on the
 * convolution descriptor, and its workspace size. */
static dsc_status *conv_find(cuda_impl *impl, conv_entry *e) {
  int algo[CONV_MAX_ALGOS];
  cudnnStatus_t status[CONV_MAX_ALGOS];
  cudnnDeterminism_t det[CONV_MAX_ALGOS];
  cudnnMathType_t math[CONV_MAX_ALGOS];
  float time[CONV_MAX_ALGOS];
  size_t memory[CONV_MAX_ALGOS];
  int max_count = 0, returned = 0;
  /* DSC_CUDNN_FIND=1: time the candidates (cudnnFind) and take the fastest; otherwise take
   * cuDNN's heuristic order (cudnnGet*_v7), which is the same in every process, so that a resumed
   * run repeats the bits of an uninterrupted one. cudnnFind times algorithms on the handle's
   * stream: wait for queued work first so that it does not count against the first candidate. */
  const char *find_env = getenv("DSC_CUDNN_FIND");
  const int timed = find_env && find_env[0] == '1';
  if (timed) CUDA_TRY(cudaStreamSynchronize(impl->stream));
  if (e->dir == CONV_FWD) {
    cudnnConvolutionFwdAlgoPerf_t perf[CONV_MAX_ALGOS];
    CUDNN_TRY(cudnnGetConvolutionForwardAlgorithmMaxCount(impl->cudnn, &max_count));
    if (max_count > CONV_MAX_ALGOS) max_count = CONV_MAX_ALGOS;
    if (max_count < 1) max_count = 1;
    if (timed)
      CUDNN_TRY(cudnnFindConvolutionForwardAlgorithm(impl->cudnn, e->x_desc, e->w_desc,
                                                   e->conv_desc, e->y_desc, max_count, &returned,
                                                   perf));
    else
      CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(impl->cudnn, e->x_desc, e->w_desc,
                                                   e->conv_desc, e->y_desc, max_count, &returned,
                                                   perf));
    CONV_COPY_PERF(perf);
  } else if (e->dir == CONV_BWD_DATA) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CONV_MAX_ALGOS];
    CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(impl->cudnn, &max_count));
    if (max_count > CONV_MAX_ALGOS) max_count = CONV_MAX_ALGOS;
    if (max_count < 1) max_count = 1;
    if (timed)
      CUDNN_TRY(cudnnFindConvolutionBackwardDataAlgorithm(impl->cudnn, e->w_desc, e->y_desc,
                                                        e->conv_desc, e->x_desc, max_count,
                                                        &returned, perf));
    else
      CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(impl->cudnn, e->w_desc, e->y_desc,
                                                        e->conv_desc, e->x_desc, max_count,
                                                        &returned, perf));
    CONV_COPY_PERF(perf);
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CONV_MAX_ALGOS];
    CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(impl->cudnn, &max_count));
    if (max_count > CONV_MAX_ALGOS) max_count = CONV_MAX_ALGOS;
    if (max_count < 1) max_count = 1;
    if (timed)
      CUDNN_TRY(cudnnFindConvolutionBackwardFilterAlgorithm(impl->cudnn, e->x_desc, e->y_desc,
                                                          e->conv_desc, e->w_desc, max_count,
                                                          &returned, perf));
    else
      CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(impl->cudnn, e->x_desc, e->y_desc,
                                                          e->conv_desc, e->w_desc, max_count,
                                                          &returned, perf));
    CONV_COPY_PERF(perf);
  }
  if (returned < 0) returned = 0;
  if (returned > max_count) returned = max_count;

  int best = -1;
  for (int i = 0; i < returned; i++)
    if (conv_usable(status[i], det[i], math[i], e->bf16) &&
        (best < 0 || (timed && time[i] < time[best])))
      best = i;
  if (best < 0) return conv_no_algo(e, returned, algo, status, det, math);

  e->algo = algo[best];
  /* fp32 mode stays on FMA math: CUDNN_DEFAULT_MATH would permit TF32 on Ampere and newer. */
  CUDNN_TRY(cudnnSetConvolutionMathType(e->conv_desc, e->bf16 ? math[best] : CUDNN_FMA_MATH));
  size_t ws = 0;
  if (e->dir == CONV_FWD)
    CUDNN_TRY(cudnnGetConvolutionForwardWorkspaceSize(impl->cudnn, e->x_desc, e->w_desc,
                                                      e->conv_desc, e->y_desc,
                                                      (cudnnConvolutionFwdAlgo_t)e->algo, &ws));
  else if (e->dir == CONV_BWD_DATA)
    CUDNN_TRY(cudnnGetConvolutionBackwardDataWorkspaceSize(
        impl->cudnn, e->w_desc, e->y_desc, e->conv_desc, e->x_desc,
        (cudnnConvolutionBwdDataAlgo_t)e->algo, &ws));
  else
    CUDNN_TRY(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        impl->cudnn, e->x_desc, e->y_desc, e->conv_desc, e->w_desc,
        (cudnnConvolutionBwdFilterAlgo_t)e->algo, &ws));
  e->ws_bytes = ws > memory[best] ? ws : memory[best];
  return NULL;
}

/* Creates e's descriptors (e->s, e->dir, e->bf16 set) and picks its algorithm. */
static dsc_status *conv_entry_init(cuda_impl *impl, conv_entry *e) {
  const dsc_conv_shape *s = &e->s;
  const cudnnDataType_t dt = e->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  CUDNN_TRY(cudnnCreateTensorDescriptor(&e->x_desc));
  CUDNN_TRY(cudnnCreateTensorDescriptor(&e->y_desc));
  CUDNN_TRY(cudnnCreateFilterDescriptor(&e->w_desc));
  CUDNN_TRY(cudnnCreateConvolutionDescriptor(&e->conv_desc));
  CUDNN_TRY(cudnnSetTensor4dDescriptor(e->x_desc, CUDNN_TENSOR_NHWC, dt, s->n, s->c_in, s->h,
                                       s->w));
  CUDNN_TRY(cudnnSetTensor4dDescriptor(e->y_desc, CUDNN_TENSOR_NHWC, dt, s->n, s->c_out, oh, ow));
  CUDNN_TRY(cudnnSetFilter4dDescriptor(e->w_desc, dt, CUDNN_TENSOR_NHWC, s->c_out, s->c_in, s->kh,
                                       s->kw));
  CUDNN_TRY(cudnnSetConvolution2dDescriptor(e->conv_desc, s->pad, s->pad, s->stride, s->stride,
                                            s->dilation, s->dilation, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
  CUDNN_TRY(cudnnSetConvolutionMathType(e->conv_desc,
                                        e->bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  int dn = 0, dc = 0, dh = 0, dw = 0;
  CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(e->conv_desc, e->x_desc, e->w_desc, &dn, &dc,
                                                  &dh, &dw));
  if (dn != s->n || dc != s->c_out || dh != oh || dw != ow)
    return DSC_ERR_AT("cuDNN output dims %dx%dx%dx%d differ from the expected %dx%dx%dx%d", dn, dc,
                      dh, dw, s->n, s->c_out, oh, ow);
  return conv_find(impl, e);
}

/* The cache entry for (s, dir, impl->bf16), made on first use. */
static dsc_status *conv_entry_get(cuda_impl *impl, const dsc_conv_shape *s, conv_dir dir,
                                  conv_entry **out) {
  if (!impl->conv_cache) {
    impl->conv_cache = (cuda_conv_cache *)calloc(1, sizeof *impl->conv_cache);
    if (!impl->conv_cache) return dsc_errorf("conv2d: out of memory (cache)");
  }
  for (conv_entry *e = impl->conv_cache->head; e; e = e->next)
    if (e->dir == dir && e->bf16 == impl->bf16 && conv_shape_equal(&e->s, s)) {
      *out = e;
      return NULL;
    }
  conv_entry *e = (conv_entry *)calloc(1, sizeof *e);
  if (!e) return dsc_errorf("conv2d: out of memory (cache entry)");
  e->s = *s;
  e->dir = dir;
  e->bf16 = impl->bf16;
  dsc_status *err = conv_entry_init(impl, e);
  if (err) {
    conv_entry_destroy(e);
    char d[200];
    return dsc_status_wrap(err, "conv2d %s setup (%s, %s)", conv_dir_name[dir],
                           conv_describe(s, d, sizeof d), impl->bf16 ? "bf16" : "fp32");
  }
  e->next = impl->conv_cache->head;
  impl->conv_cache->head = e;
  *out = e;
  return NULL;
}

/* The KRSC copy of w in CUDA_SLOT_CONV_W16 (fp32 or bf16 by mode). The slot holds `regions`
 * regions of round_up(count * element size) bytes; the copy is the first, *second (when not
 * NULL) receives the second. */
static dsc_status *conv_weights(cuda_impl *impl, const dsc_conv_shape *s, const float *w,
                                int regions, void **wk, void **second) {
  const size_t count = (size_t)s->c_out * s->c_in * s->kh * s->kw;
  const size_t elem = impl->bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
  const size_t region = conv_round_up(count * elem);
  char *base = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_W16, region * (size_t)regions, (void **)&base));
  *wk = base;
  if (second) *second = base + region;
  if (!w) return NULL;
  if (impl->bf16)
    conv_w_to_krsc_bf16<<<cuda_blocks(count, CONV_THREADS), CONV_THREADS, 0, impl->stream>>>(
        (__nv_bfloat16 *)base, w, s->c_out, s->c_in, s->kh, s->kw);
  else
    conv_w_to_krsc_f32<<<cuda_blocks(count, CONV_THREADS), CONV_THREADS, 0, impl->stream>>>(
        (float *)base, w, s->c_out, s->c_in, s->kh, s->kw);
  CUDA_LAUNCH_CHECK();
  return NULL;
}

/* A bf16 copy of `count` floats of src in `slot`. */
static dsc_status *conv_to_bf16(cuda_impl *impl, cuda_slot slot, const float *src, size_t count,
                                __nv_bfloat16 **out) {
  DSC_TRY(cuda_scratch(impl, slot, count * sizeof(__nv_bfloat16), (void **)out));
  return cuda_to_bf16(impl, *out, src, count);
}

/* ---- ops ---- */

/* y = conv(x, w) + b (backend.h). */
dsc_status *cuda_conv2d_forward(dsc_backend *be, const dsc_conv_shape *s, float *y, const float *x,
                                const float *w, const float *b) {
  DSC_TRY(backend_check_conv2d_forward(s, y, x, w));
  cuda_impl *impl = cuda_impl_of(be);
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  const size_t x_count = (size_t)s->n * s->h * s->w * s->c_in;
  const int64_t y_rows = (int64_t)s->n * oh * ow;
  const size_t y_count = (size_t)y_rows * s->c_out;
  conv_entry *e = NULL;
  DSC_TRY(conv_entry_get(impl, s, CONV_FWD, &e));

  void *wk = NULL;
  DSC_TRY(conv_weights(impl, s, w, 1, &wk, NULL));
  const void *xin = x;
  void *yout = y;
  if (impl->bf16) {
    __nv_bfloat16 *x16 = NULL;
    DSC_TRY(conv_to_bf16(impl, CUDA_SLOT_CONV_X16, x, x_count, &x16));
    xin = x16;
    DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_Y16, y_count * sizeof(__nv_bfloat16), &yout));
  }
  void *ws = NULL;
  DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_WS, e->ws_bytes, &ws));
  const float one = 1.0f, zero = 0.0f;
  CUDNN_TRY(cudnnConvolutionForward(impl->cudnn, &one, e->x_desc, xin, e->w_desc, wk,
                                    e->conv_desc, (cudnnConvolutionFwdAlgo_t)e->algo, ws,
                                    e->ws_bytes, &zero, e->y_desc, yout));
  if (impl->bf16) DSC_TRY(cuda_from_bf16(impl, y, (const __nv_bfloat16 *)yout, y_count));
  if (b) {
    conv_bias_add<<<cuda_blocks(y_count, CONV_THREADS), CONV_THREADS, 0, impl->stream>>>(
        y, b, y_rows, s->c_out);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

/* dx = conv_transpose(dy, w) (=, NULL skips); dw += corr(x, dy) (NULL skips); db += sum dy
 * (NULL skips) (backend.h). */
dsc_status *cuda_conv2d_backward(dsc_backend *be, const dsc_conv_shape *s, float *dx, float *dw,
                                 float *db, const float *dy, const float *x, const float *w) {
  DSC_TRY(backend_check_conv2d_backward(s, dx, dw, dy, x, w));
  cuda_impl *impl = cuda_impl_of(be);
  const int oh = dsc_conv_oh(s), ow = dsc_conv_ow(s);
  const size_t x_count = (size_t)s->n * s->h * s->w * s->c_in;
  const int64_t y_rows = (int64_t)s->n * oh * ow;
  const size_t y_count = (size_t)y_rows * s->c_out;
  const size_t w_count = (size_t)s->c_out * s->c_in * s->kh * s->kw;
  const float one = 1.0f, zero = 0.0f;

  /* db first: its partial sums use the workspace slot before cuDNN does. */
  if (db) DSC_TRY(cuda_colsum_add(impl, CUDA_SLOT_CONV_WS, dy, y_rows, s->c_out, db));
  if (!dx && !dw) return NULL;

  /* The weight slot's two regions: the KRSC copy of w (dx only) and the KRSC gradient. */
  void *wk = NULL, *dwk = NULL;
  DSC_TRY(conv_weights(impl, s, dx ? w : NULL, 2, &wk, &dwk));
  const void *dy_in = dy;
  if (impl->bf16) {
    __nv_bfloat16 *dy16 = NULL;
    DSC_TRY(conv_to_bf16(impl, CUDA_SLOT_CONV_X16, dy, y_count, &dy16));
    dy_in = dy16;
  }

  if (dx) {
    conv_entry *e = NULL;
    DSC_TRY(conv_entry_get(impl, s, CONV_BWD_DATA, &e));
    void *dx_out = dx;
    if (impl->bf16)
      DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_Y16, x_count * sizeof(__nv_bfloat16), &dx_out));
    void *ws = NULL;
    DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_WS, e->ws_bytes, &ws));
    CUDNN_TRY(cudnnConvolutionBackwardData(impl->cudnn, &one, e->w_desc, wk, e->y_desc, dy_in,
                                           e->conv_desc, (cudnnConvolutionBwdDataAlgo_t)e->algo,
                                           ws, e->ws_bytes, &zero, e->x_desc, dx_out));
    if (impl->bf16) DSC_TRY(cuda_from_bf16(impl, dx, (const __nv_bfloat16 *)dx_out, x_count));
  }

  if (dw) {
    conv_entry *e = NULL;
    DSC_TRY(conv_entry_get(impl, s, CONV_BWD_FILTER, &e));
    const void *x_in = x;
    if (impl->bf16) {
      __nv_bfloat16 *x16 = NULL;
      DSC_TRY(conv_to_bf16(impl, CUDA_SLOT_CONV_D16, x, x_count, &x16));
      x_in = x16;
    }
    void *ws = NULL;
    DSC_TRY(cuda_scratch(impl, CUDA_SLOT_CONV_WS, e->ws_bytes, &ws));
    CUDNN_TRY(cudnnConvolutionBackwardFilter(impl->cudnn, &one, e->x_desc, x_in, e->y_desc, dy_in,
                                             e->conv_desc,
                                             (cudnnConvolutionBwdFilterAlgo_t)e->algo, ws,
                                             e->ws_bytes, &zero, e->w_desc, dwk));
    if (impl->bf16)
      conv_krsc_add_bf16<<<cuda_blocks(w_count, CONV_THREADS), CONV_THREADS, 0, impl->stream>>>(
          dw, (const __nv_bfloat16 *)dwk, s->c_out, s->c_in, s->kh, s->kw);
    else
      conv_krsc_add_f32<<<cuda_blocks(w_count, CONV_THREADS), CONV_THREADS, 0, impl->stream>>>(
          dw, (const float *)dwk, s->c_out, s->c_in, s->kh, s->kw);
    CUDA_LAUNCH_CHECK();
  }
  return NULL;
}

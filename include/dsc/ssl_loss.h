/* ssl_loss.h: the pieces of one self-supervised step that are not the networks
 * (spec/METHOD.md §3-4): per-row L2 normalization, the argmax correspondence and the
 * neighbors, every loss term with its gradient, online k-means and Sinkhorn codes.
 *
 * Conventions (hold for every function here):
 *  - Host memory, float32 storage; accumulations and log-sum-exp in double.
 *  - Embeddings are rows of `d` floats: a dense map (n, p, d) is n*p rows, row n*p + i being
 *    pixel i of image n (the NHWC order of the backend, so each pixel's vector is contiguous).
 *  - A queue is stored [d][L] row-major (the checkpoint's `queue.global [D,L]`): column l is
 *    queue[r*L + l] for r in [0,d).
 *  - Every loss returns its UNWEIGHTED value (the mean over its items, METHOD.md §4) in
 *    *loss and ACCUMULATES `scale` times its gradient into the gradient outputs (+=), so a
 *    caller zeroes a gradient once and adds each term with scale = lambda. A NULL gradient
 *    output skips that gradient.
 *  - Keys, positives, neighbors, queues and codes are constants (no gradient), as METHOD.md
 *    says; gradients exist only with respect to the query embeddings and the prototypes.
 *  - Ties of argmax / top-k / nearest centroid go to the smallest index (METHOD.md §1).
 *  - `be` is used only for its gemm (large products: queue logits, similarity matrices);
 *    it must be a host-memory backend (cpu or ref).
 *  - Results are deterministic for a fixed thread count. Work memory is allocated inside
 *    and bounded (rows are processed in chunks, never a full rows x L logit matrix).
 */
#ifndef DSC_SSL_LOSS_H
#define DSC_SSL_LOSS_H

#include <stdint.h>

#include "backend/backend.h"
#include "dsc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- normalization (METHOD.md §1: norm(x) = x / max(|x|, 1e-12)) ---- */

/* y = norm(x) per row; norms[r] = |x_r| (before the clamp) when norms is not NULL.
 * y may alias x. */
void dsc_l2norm_rows(int64_t rows, int d, float *y, float *norms, const float *x);
/* Backward of dsc_l2norm_rows: dx = (dy - y (y . dy)) / |x| when |x| > 1e-12, else
 * dx = dy / 1e-12. Overwrites dx (=); dx may alias dy. */
void dsc_l2norm_rows_backward(int64_t rows, int d, float *dx, const float *dy, const float *y,
                              const float *norms);

/* ---- correspondence and neighbors (METHOD.md §3, §4.3) ---- */

/* u_a, u_b: (n, p, c) L2-normalized backbone features of the two views.
 * match[n*p + i] = argmax_j u_a[n,i] . u_b[n,j] (ties: smallest j). */
dsc_status *dsc_ssl_match(dsc_backend *be, int n, int p, int c, const float *u_a,
                          const float *u_b, int32_t *match);
/* idx[(n*p + i)*k + t] = the t-th most similar pixel j != i of the same image under
 * u_a[n,i] . u_a[n,j], in decreasing similarity (ties: smallest j). Requires 1 <= k < p. */
dsc_status *dsc_ssl_neighbors(dsc_backend *be, int n, int p, int c, int k, const float *u_a,
                              int32_t *idx);

/* ---- contrastive terms ---- */

/* InfoNCE with `npos` positives per query and shared queue negatives (METHOD.md §4.1, §4.2,
 * §4.3). For each row r: logits = [q_r . pos[r,0..npos), q_r . queue[:,0..L)] / tau and
 *   loss_r = logsumexp(all logits) - logsumexp(first npos logits)
 * (npos = 1: CE with target 0; L_ins with q = z^a, pos = z^b; L_pix with q = v^a rows and
 * pos = the matched v^b rows; L_nei with pos = [matched v^b row, its k_nei detached neighbors]).
 * q (rows, d) normalized; pos (rows, npos, d); queue [d][L]. *loss = mean_r loss_r.
 * dq (rows, d) += scale * dloss/dq. */
dsc_status *dsc_loss_infonce(dsc_backend *be, int64_t rows, int d, int npos, int64_t L,
                             const float *q, const float *pos, const float *queue, float tau,
                             float scale, double *loss, float *dq);

/* Several InfoNCE terms over the same queries, queue and temperature, differing only in their
 * positives (L_pix and L_nei of dsc-nei, METHOD.md §4.2-4.3): the rows x L queue logits, their
 * exponentials and the gradient's product with the queue are computed once for all heads. Each
 * head h has npos positives pos (rows, npos, d), a gradient scale, and receives its own mean loss
 * in *loss; dq += sum_h scale_h * dloss_h/dq. Equal, up to rounding, to one dsc_loss_infonce
 * call per head. */
typedef struct dsc_infonce_head {
  int npos;
  const float *pos;
  float scale;
  double *loss;
} dsc_infonce_head;
dsc_status *dsc_loss_infonce_heads(dsc_backend *be, int64_t rows, int d, int64_t L,
                                   const float *q, const float *queue, float tau, int n_heads,
                                   const dsc_infonce_head *heads, float *dq);

/* Triplet (METHOD.md §4.4), cosine distance delta(x,y) = 1 - x.y:
 *   loss_r = sum_t max(0, delta(q_r, pos_r) - delta(q_r, nei[r,t]) + margin)
 * q, pos (rows, d); nei (rows, k, d). *loss = mean_r loss_r; dq += scale * grad
 * (a hinge at exactly 0 has gradient 0). */
void dsc_loss_triplet(int64_t rows, int d, int k, const float *q, const float *pos,
                      const float *nei, float margin, float scale, double *loss, float *dq);

/* ---- online k-means (METHOD.md §4.5) ---- */

/* First-step initialization: K distinct rows of v (rows, d) by a partial Fisher-Yates
 * shuffle of [0, rows): for t = 0..K-1, j = t + floor(u * (rows - t)) with
 * u = dsc_rng_uniform(seed, DSC_RNG_KMEANS, step, t, 0), swap; centroid t = v[perm[t]].
 * Error if rows < K. */
dsc_status *dsc_kmeans_init(int64_t rows, int d, int k, const float *v, uint64_t seed,
                            uint64_t step, float *centroids);
/* The rows that initialization picks, chosen[t] for t < k (the rule above; it depends only on
 * rows, k, seed and step, so a device backend computes it on the host and copies the rows). */
dsc_status *dsc_kmeans_init_rows(int64_t rows, int k, uint64_t seed, uint64_t step,
                                 int64_t *chosen);
/* `iters` spherical k-means iterations on v (rows, d) from centroids (k, d), in place:
 * assign argmax_k M_k . v (ties: smallest k), then M_k = norm(mean of assigned rows); an
 * empty cluster keeps its centroid. labels (rows) = the assignments of the last iteration
 * (made before its update); history (iters, rows) = every iteration's assignments (NULL
 * skips). */
dsc_status *dsc_kmeans_run(dsc_backend *be, int64_t rows, int d, int k, int iters,
                           const float *v, float *centroids, int32_t *labels,
                           int32_t *history);
/* L_km (METHOD.md §4.5 steps 4-5): v_a (rows, d) query pixels with labels y_a, v_b (rows, d)
 * key pixels with labels y_b, labels in [0, k). Clusters present in both (sorted) form P;
 * e^a_k = norm(mean v_a over y_a = k), e^b_k likewise;
 *   loss = mean_{k in P} CE([e^a_k . e^b_k']_{k' in P} / tau, index of k), 0 if |P| < 2.
 * dv_a += scale * grad. *present = |P| (may be NULL). */
dsc_status *dsc_loss_kmeans(int64_t rows, int d, int k, const float *v_a, const int32_t *y_a,
                            const float *v_b, const int32_t *y_b, float tau, float scale,
                            double *loss, float *dv_a, int *present);

/* ---- prototypes (METHOD.md §4.6, §4.7) ---- */

/* SwAV's Sinkhorn-Knopp on scores (b, k) (rows = samples): codes (b, k), each row summing
 * to 1, exactly as METHOD.md §4.6 (max subtracted before exp, FLT_MIN flushing, divisions
 * by max(sum, FLT_MIN)). */
void dsc_sinkhorn(int64_t b, int k, const float *scores, float eps, int iters, float *codes);

typedef enum dsc_proto_loss_kind {
  DSC_PROTO_SWAP = 0, /* L_pm: swapped prediction with soft codes (dsc-pm) */
  DSC_PROTO_CE = 1,   /* L_ce: one direction, hard target argmax of the key code (dsc-ce) */
} dsc_proto_loss_kind;

/* L_pm / L_ce for n images of p pixels. v_a, v_b (n*p, d) normalized query / key pixels;
 * match (n*p) the correspondence c(n,i) (a pixel index within image n); protos (k, d) the
 * (already row-normalized) prototypes. Scores s^a = v_a C^T, s^b = v_b C^T; codes
 * q^b = sinkhorn(s^b) over all n*p key rows and (SWAP only) q^a = sinkhorn(s^a); with
 * p(s) = softmax(s / tau):
 *   SWAP: loss_r = -sum_k q^b[c(r),k] log p(s^a_r)_k - sum_k q^a[r,k] log p(s^b_c(r))_k
 *   CE:   loss_r = CE(s^a_r / tau, argmax_k q^b[c(r),k])
 * with c(r) = n*p + match[r] for r = n*p + i. *loss = mean_r loss_r.
 * dv_a (n*p, d) += scale * dloss/dv_a; dprotos (k, d) += scale * dloss/dC (through s^a and,
 * for SWAP, s^b). ce_target (n*p, may be NULL) receives the CE targets (CE only). */
dsc_status *dsc_loss_proto(dsc_backend *be, dsc_proto_loss_kind kind, int n, int p, int d,
                           int k, const float *v_a, const float *v_b, const int32_t *match,
                           const float *protos, float tau, float eps, int iters, float scale,
                           double *loss, float *dv_a, float *dprotos, int32_t *ce_target);

#ifdef __cplusplus
}
#endif

#endif

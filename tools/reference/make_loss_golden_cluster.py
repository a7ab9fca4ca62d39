#!/usr/bin/python3
"""make_loss_golden_cluster.py: writes tests/golden/loss_cluster.safetensors, the fixture of
tests/test_ssl_cluster.c (online k-means, L_km, Sinkhorn, L_pm, L_ce).

Usage: /usr/bin/python3 tools/reference/make_loss_golden_cluster.py [OUT]
       (default tests/golden/loss_cluster.safetensors)

Never needed to build or test: the output is committed. Every formula is written here in PyTorch
float64 straight from spec/METHOD.md, on the float32 inputs stored in the file (so the C code sees
exactly the same inputs):
  §4.5 step 2  T spherical k-means iterations on the key pixels v_b from the given centroids:
               assign argmax_k M_k . v (ties: smallest k), M_k = norm(mean), empty keeps M_k;
               labels = the assignments of iteration T (before its update)
  §4.5 step 3  y_a(n,i) = y_b(n, c(n,i))
  §4.5 4-5     L_km = mean_{k in P} CE([e^a_k . e^b_k'] / tau_sem, index of k), gradient w.r.t. v_a
               by torch.autograd
  §4.6         Sinkhorn (SwAV, K x B, max subtracted, FLT_MIN rules), L_pm with autograd w.r.t. v_a
               and the prototypes (codes detached)
  §4.7         L_ce with the hard target argmax of the key code, autograd likewise

The random inputs are redrawn (next seed) until every argmax (every k-means assignment of every
iteration, every CE target) wins by a margin > 1e-4 and L_km has at least 3 clusters present, so a
float32 implementation cannot flip a decision. Gradients are for scale = 1.

Tensors (float32 inputs, float64 expected values, int32 labels):
  v_a, v_b [N*P, D]  normalized query / key pixels     match [N*P] c(n,i) within the image
  km.init [K, D]     initial centroids (rows of v_b)    protos [KP, D] normalized prototypes
  km.history [T, N*P], km.labels [N*P], km.centroids [K, D], km.labels_a [N*P]
  km.loss [], km.present [], km.grad_v_a [N*P, D]
  pm.codes_b, pm.codes_a [N*P, KP]; pm.loss [], pm.grad_v_a, pm.grad_protos
  ce.target [N*P]; ce.loss [], ce.grad_v_a, ce.grad_protos
Metadata: n, p, d, k, kp, km_iters, tau_km, tau_pm, eps, sinkhorn_iters (decimal strings).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from dsc_torch import sinkhorn  # noqa: E402  (METHOD.md §4.6, the step reference's own)

N, P, D, K, KP = 2, 9, 8, 5, 6
KM_ITERS = 3
TAU_KM, TAU_PM, EPS, SK_ITERS = 0.2, 0.1, 0.05, 3
MARGIN = 1e-4


def norm(x):
    """METHOD.md §1: x / max(|x|, 1e-12) along the last dimension."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def argmax_margin(s):
    """argmax along the last dim (ties: smallest index, torch returns the first) and the margin
    between the best and the second best."""
    top = torch.topk(s, 2, dim=-1).values
    return s.argmax(dim=-1), (top[..., 0] - top[..., 1]).min().item()


def kmeans(v, m, iters):
    m = m.clone()
    history = []
    margin = float("inf")
    for _ in range(iters):
        lab, mg = argmax_margin(v @ m.T)
        margin = min(margin, mg)
        history.append(lab.clone())
        for c in range(m.shape[0]):
            sel = lab == c
            if sel.any():
                m[c] = norm(v[sel].mean(dim=0))
    return torch.stack(history), history[-1], m, margin


def loss_km(v_a, y_a, v_b, y_b, k, tau):
    pres = [c for c in range(k) if (y_a == c).any() and (y_b == c).any()]
    if len(pres) < 2:
        return v_a.sum() * 0, len(pres)
    ea = torch.stack([norm(v_a[y_a == c].mean(dim=0)) for c in pres])
    eb = torch.stack([norm(v_b[y_b == c].mean(dim=0)) for c in pres])
    logits = ea @ eb.T / tau
    target = torch.arange(len(pres))
    return torch.nn.functional.cross_entropy(logits, target), len(pres)


def corr_index(match):
    rows = torch.arange(N * P)
    return (rows // P) * P + match


def proto_losses(v_a, v_b, match, protos):
    c = corr_index(match)
    sa = v_a @ protos.T
    sb = v_b @ protos.T
    qb = sinkhorn(sb.detach(), EPS, SK_ITERS)
    qa = sinkhorn(sa.detach(), EPS, SK_ITERS)
    lpa = torch.log_softmax(sa / TAU_PM, dim=1)
    lpb = torch.log_softmax(sb / TAU_PM, dim=1)
    pm = (-(qb[c] * lpa).sum(dim=1) - (qa * lpb[c]).sum(dim=1)).mean()
    target, margin = argmax_margin(qb[c])
    ce = torch.nn.functional.cross_entropy(sa / TAU_PM, target)
    return pm, ce, qa, qb, target, margin


def draw(seed):
    g = torch.Generator().manual_seed(seed)
    v_a = norm(torch.randn(N * P, D, generator=g, dtype=torch.float64)).float().double()
    v_b = norm(torch.randn(N * P, D, generator=g, dtype=torch.float64)).float().double()
    match = torch.randint(0, P, (N * P,), generator=g)
    init_idx = torch.randperm(N * P, generator=g)[:K]
    init = v_b[init_idx].clone()
    protos = norm(torch.rand(KP, D, generator=g, dtype=torch.float64) * 2 - 1).float().double()
    return v_a, v_b, match, init, protos


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/loss_cluster.safetensors"
    for seed in range(1000):
        v_a, v_b, match, init, protos = draw(seed)
        history, labels, cent, km_margin = kmeans(v_b, init, KM_ITERS)
        y_a = labels[corr_index(match)]
        va = v_a.clone().requires_grad_(True)
        lkm, present = loss_km(va, y_a, v_b, labels, K, TAU_KM)
        _, _, _, _, _, ce_margin = proto_losses(v_a, v_b, match, protos)
        if km_margin > MARGIN and ce_margin > MARGIN and present >= 3:
            break
    else:
        raise SystemExit("no seed gave margins > 1e-4")
    print(f"seed {seed}: k-means margin {km_margin:.3g}, CE target margin {ce_margin:.3g}, "
          f"{present} clusters present")
    lkm.backward()
    km_grad = va.grad.clone()

    va = v_a.clone().requires_grad_(True)
    pa = protos.clone().requires_grad_(True)
    pm, _, qa, qb, _, _ = proto_losses(va, v_b, match, pa)
    pm.backward()
    pm_gv, pm_gp = va.grad.clone(), pa.grad.clone()

    va = v_a.clone().requires_grad_(True)
    pa = protos.clone().requires_grad_(True)
    _, ce, _, _, target, _ = proto_losses(va, v_b, match, pa)
    ce.backward()
    ce_gv, ce_gp = va.grad.clone(), pa.grad.clone()

    f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    f64 = lambda t: np.asarray(t.detach().numpy(), dtype=np.float64)  # noqa: E731
    i32 = lambda t: t.numpy().astype(np.int32)  # noqa: E731
    tensors = {
        "v_a": f32(v_a), "v_b": f32(v_b), "match": i32(match), "km.init": f32(init),
        "protos": f32(protos),
        "km.history": i32(history), "km.labels": i32(labels), "km.centroids": f64(cent),
        "km.labels_a": i32(y_a), "km.loss": np.array(lkm.item(), dtype=np.float64),
        "km.present": np.array(present, dtype=np.int32), "km.grad_v_a": f64(km_grad),
        "pm.codes_a": f64(qa), "pm.codes_b": f64(qb), "pm.loss": np.array(pm.item(), dtype=np.float64),
        "pm.grad_v_a": f64(pm_gv), "pm.grad_protos": f64(pm_gp),
        "ce.target": i32(target), "ce.loss": np.array(ce.item(), dtype=np.float64),
        "ce.grad_v_a": f64(ce_gv), "ce.grad_protos": f64(ce_gp),
    }
    meta = {"n": str(N), "p": str(P), "d": str(D), "k": str(K), "kp": str(KP),
            "km_iters": str(KM_ITERS), "tau_km": repr(TAU_KM), "tau_pm": repr(TAU_PM),
            "eps": repr(EPS), "sinkhorn_iters": str(SK_ITERS), "seed": str(seed)}
    size = safetensors_py.write(out, tensors, meta)
    print(f"wrote {out} ({size} bytes)")


if __name__ == "__main__":
    main()

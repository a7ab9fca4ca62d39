#!/usr/bin/python3
"""make_loss_golden_contrast.py: writes tests/golden/loss_contrast.safetensors, the fixture of
tests/test_ssl_contrast.c (per-row L2 normalization, the correspondence argmax, the neighbors,
InfoNCE and the triplet term of spec/METHOD.md §1, §3, §4.1-4.4).

Usage: /usr/bin/python3 tools/reference/make_loss_golden_contrast.py [OUT]
       (default tests/golden/loss_contrast.safetensors)

Never needed to build or test: the output is committed. Inputs are drawn from a seeded
torch.Generator in float64, normalized where the spec normalizes, rounded once to float32 and
stored as F32; every expected value is computed in PyTorch float64 from those float32 values,
straight from the formulas of METHOD.md (no code shared with the C side), gradients with
torch.autograd with respect to the query rows, and stored as F64 (indices as I32):

  l2norm.x (R,D), l2norm.dy (R,D)       inputs (row 3 of x is zero: the norm < 1e-12 case)
  l2norm.y, l2norm.norms, l2norm.dx     y = x / max(|x|, 1e-12), |x|, dx = d(y . dy)/dx
  match.u_a, match.u_b (N,P,C)          normalized backbone features of the two views
  match.idx (N*P)                       argmax_j u_a[n,i] . u_b[n,j]
  neighbors.k<K>.idx (N*P, K)           top-K of u_a[n,i] . u_a[n,j] over j != i, decreasing
  infonce_<c>.q (R,D), .pos (R,NPOS,D), .queue (D,L), .tau ()
  infonce_<c>.loss (), .grad (R,D)      mean_r [logsumexp(all logits) - logsumexp(positive logits)]
  triplet.q (R,D), .pos (R,D), .nei (R,K,D), .margin ()
  triplet.loss (), triplet.grad (R,D)   mean_r sum_t max(0, (1 - q.p) - (1 - q.m_t) + margin)

The data are redrawn until every decision is clear of ties: argmax / top-k gaps and triplet
hinges all exceed 1e-4 in float64 (the script asserts it and prints the smallest margins), so
float32 arithmetic in the C code makes the same choices.
"""
import hashlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

MIN_GAP = 1e-4


def normalized(g, *shape):
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.float().double()  # the stored float32 values, in float64


def f32(x):
    return x.float().numpy()


def l2norm_case(g, out):
    x = torch.randn(6, 8, generator=g, dtype=torch.float64).float().double()
    x[3] = 0.0
    dy = torch.randn(6, 8, generator=g, dtype=torch.float64).float().double()
    xr = x.clone().requires_grad_(True)
    n = xr.norm(dim=1, keepdim=True)
    y = xr / n.clamp_min(1e-12)
    (y * dy).sum().backward()
    dx = xr.grad.clone()
    # The zero row: the norm's gradient at 0 is taken as 0 (PyTorch's choice), so dx = dy / 1e-12.
    assert torch.allclose(dx[3], dy[3] / 1e-12)
    out.update({"l2norm.x": f32(x), "l2norm.dy": f32(dy), "l2norm.y": y.detach().numpy(),
                "l2norm.norms": n.detach().reshape(-1).numpy(), "l2norm.dx": dx.numpy()})


def ranked_gap(s):
    """Smallest gap between consecutive values of each row of s sorted decreasingly."""
    v, _ = s.sort(dim=-1, descending=True)
    return (v[..., :-1] - v[..., 1:]).min().item()


def match_case(g, out):
    n, p, c, ks = 2, 9, 16, (1, 3)
    while True:
        ua, ub = normalized(g, n, p, c), normalized(g, n, p, c)
        s_ab = ua @ ub.transpose(1, 2)
        s_aa = ua @ ua.transpose(1, 2)
        off = ~torch.eye(p, dtype=torch.bool).expand(n, p, p)
        s_aa_off = s_aa[off].reshape(n, p, p - 1)
        gap = min(ranked_gap(s_ab), ranked_gap(s_aa_off))
        if gap > MIN_GAP:
            break
    print(f"match: smallest similarity gap {gap:.3g}")
    out["match.u_a"], out["match.u_b"] = f32(ua), f32(ub)
    out["match.idx"] = s_ab.argmax(dim=2).reshape(-1).int().numpy()
    s_excl = s_aa.masked_fill(~off, -float("inf"))
    for k in ks:
        out[f"neighbors.k{k}.idx"] = s_excl.topk(k, dim=2).indices.reshape(n * p, k).int().numpy()


def infonce_case(g, out, name, rows, d, npos, L, tau):
    q = normalized(g, rows, d)
    pos = normalized(g, rows, npos, d)
    queue = normalized(g, L, d).t().contiguous()  # [d][L]: column l is one key
    qr = q.clone().requires_grad_(True)
    logits = torch.cat([(qr.unsqueeze(1) * pos).sum(-1), qr @ queue], dim=1) / tau
    loss = (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, :npos], dim=1)).mean()
    loss.backward()
    out.update({f"{name}.q": f32(q), f"{name}.pos": f32(pos), f"{name}.queue": f32(queue),
                f"{name}.tau": torch.tensor(tau, dtype=torch.float32).numpy(),
                f"{name}.loss": loss.detach().numpy(), f"{name}.grad": qr.grad.numpy()})


def triplet_case(g, out, rows, d, k, margin):
    while True:
        q, pos, nei = normalized(g, rows, d), normalized(g, rows, d), normalized(g, rows, k, d)
        h = (1 - (q * pos).sum(-1)).unsqueeze(1) - (1 - (q.unsqueeze(1) * nei).sum(-1)) + margin
        if h.abs().min().item() > MIN_GAP and (h > 0).any() and (h <= 0).any():
            break
    print(f"triplet: smallest |hinge| {h.abs().min().item():.3g}, {(h > 0).sum().item()} of "
          f"{h.numel()} active")
    qr = q.clone().requires_grad_(True)
    dp = 1 - (qr * pos).sum(-1)
    dm = 1 - (qr.unsqueeze(1) * nei).sum(-1)
    loss = torch.clamp(dp.unsqueeze(1) - dm + margin, min=0).sum(1).mean()
    loss.backward()
    out.update({"triplet.q": f32(q), "triplet.pos": f32(pos), "triplet.nei": f32(nei),
                "triplet.margin": torch.tensor(margin, dtype=torch.float32).numpy(),
                "triplet.loss": loss.detach().numpy(), "triplet.grad": qr.grad.numpy()})


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/loss_contrast.safetensors"
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(20261126)
    out = {}
    l2norm_case(g, out)
    match_case(g, out)
    # tau values are float32 in C: use the float32-rounded value in the reference too.
    t02, t007 = float(torch.tensor(0.2).float()), float(torch.tensor(0.07).float())
    infonce_case(g, out, "infonce_a", 18, 8, 1, 32, t02)    # L_ins / L_pix shape: one positive
    infonce_case(g, out, "infonce_b", 18, 8, 3, 32, t007)   # L_nei shape: match + 2 neighbors
    infonce_case(g, out, "infonce_c", 260, 8, 2, 16, t02)   # more rows than one chunk (256)
    triplet_case(g, out, 18, 8, 2, float(torch.tensor(0.3).float()))
    size = safetensors_py.write(path, out)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"{path}: {size} bytes, sha256 {digest[:16]}")


if __name__ == "__main__":
    main()

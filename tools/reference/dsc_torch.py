"""dsc_torch.py: one pretraining step of dsc (spec/METHOD.md), written independently in PyTorch.

The reference side of the step dump (spec/INTERFACES.md "The step dump"): check_step.py recomputes a
dumped step with `reference_step` in float64 and compares every tensor; make_step_dump.py writes
synthetic dumps with it; bench/torch_step.py times the same step in float32.

Conventions:
- Tensors are keyed by their checkpoint names (METHOD.md §8): `backbone.<torchvision key>`,
  `neck.mlp.*`, `neck.mlp2.*`, `momentum.backbone.*`, `momentum.neck.*`, `queue.global [D,L]`,
  `queue.dense [D,L]`, `queue.ptr` (int64 0-dim), `km.centroids [K,D]`, `prototypes.weight [K,D]`,
  `optim.momentum.<parameter name>`. Dense maps are PyTorch's NCHW; a pixel index is h*W + w.
- Float64 by default (`dtype=` chooses); the state given to the step is copied, never modified.
- Device-agnostic: the step computes on the device of its inputs and model (`Model.to_device`
  moves a model; `queue.ptr` stays a host scalar); its only host synchronizations are the checks
  of `perm` (before any work, on perm's own device), the dsc-km centroid check and the set of
  clusters present (both dsc-km only). `step(..., autocast=torch.bfloat16)` runs the forward
  passes and the losses under torch.autocast (bench/torch_step.py --precision bf16): logits enter
  the log-sum-exp in float32, as autocast does for cross_entropy; backward, SGD, EMA, parameters,
  buffers and queues stay in the model's dtype. Without it (the default) nothing changes.
- Every argmax / top-k / nearest centroid breaks ties by the smallest index (METHOD.md §1).
- Discrete choices: the step computes its own; where `discrete` gives another implementation's
  choices (match.c, nei.idx, km.history, ce.target), it records for every differing choice the score
  gap between its own candidate and the given one, then CONTINUES WITH THE GIVEN CHOICE, so one
  near-tie does not cascade. Gaps are in cosine-similarity units (for ce.target: eps * |log q|
  differences, i.e. the same units through Sinkhorn's exp(S/eps)).
- BatchNorm (METHOD.md §5): each group of N/G consecutive images of the (for the key encoder,
  shuffled) batch is normalized with its own batch statistics (biased variance, eps 1e-5); running
  statistics: momentum 0.1 with the unbiased variance, averaged over the groups; num_batches_tracked
  grows by one per forward.
"""

import contextlib
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

METHODS = ("moco-v2", "densecl", "dsc-nei", "dsc-tri", "dsc-ce", "dsc-km", "dsc-pm")
FLT_MIN = 1.1754943508222875e-38  # float32's smallest normal number (METHOD.md §4.6 Sinkhorn)
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


@dataclass
class Config:
    """The resolved configuration keys a step needs (spec/INTERFACES.md names in comments)."""
    method: str = "dsc-pm"          # method.name
    tau_ins: float = 0.2            # method.tau_ins
    tau_pix: float = 0.2            # method.tau_pix
    tau_sem: float = 0.2            # method.tau_sem
    tau_pm: float = 0.1             # method.tau_pm
    lambda_ins: float = 0.5         # method.lambda_ins (resolved: 1 for moco-v2 by default)
    lambda_pix: float = 0.5         # method.lambda_pix
    lambda_sem: float = 0.5         # method.lambda_sem
    queue: int = 65536              # method.queue
    momentum: float = 0.999         # method.momentum (EMA)
    k_nei: int = 1                  # method.k_nei
    margin: float = 0.3             # method.margin
    clusters: int = 100             # method.clusters
    km_iters: int = 10              # method.km_iters
    prototypes: int = 150           # method.prototypes
    sinkhorn_eps: float = 0.05      # method.sinkhorn_eps
    sinkhorn_iters: int = 3         # method.sinkhorn_iters
    freeze_prototypes_steps: int = 0  # method.freeze_prototypes_steps
    bn_groups: int = 8              # method.bn_groups
    arch: str = "resnet50"          # model.arch
    stem: str = "standard"          # model.stem
    dim: int = 128                  # model.dim
    lr: float = 0.3                 # optim.lr (base lr at batch 256)
    optim_momentum: float = 0.9     # optim.momentum
    nesterov: int = 1               # optim.nesterov
    weight_decay: float = 1e-4      # optim.weight_decay
    warmup_steps: int = 0           # optim.warmup_steps
    batch: int = 256                # data.batch (global)
    step: int = 0                   # metadata `step`: the index of the step
    total_steps: int = 1            # metadata `total_steps` (S of METHOD.md §5)

    @property
    def dense(self):
        return self.method != "moco-v2"

    @property
    def uses_neighbors(self):
        return self.method in ("dsc-nei", "dsc-tri")

    @property
    def uses_prototypes(self):
        return self.method in ("dsc-pm", "dsc-ce")

    @property
    def uses_kmeans(self):
        return self.method == "dsc-km"


# metadata key -> Config field; every one is required in a dump.
METADATA_KEYS = {
    "method.name": "method", "method.tau_ins": "tau_ins", "method.tau_pix": "tau_pix",
    "method.tau_sem": "tau_sem", "method.tau_pm": "tau_pm", "method.lambda_ins": "lambda_ins",
    "method.lambda_pix": "lambda_pix", "method.lambda_sem": "lambda_sem", "method.queue": "queue",
    "method.momentum": "momentum", "method.k_nei": "k_nei", "method.margin": "margin",
    "method.clusters": "clusters", "method.km_iters": "km_iters", "method.prototypes": "prototypes",
    "method.sinkhorn_eps": "sinkhorn_eps", "method.sinkhorn_iters": "sinkhorn_iters",
    "method.freeze_prototypes_steps": "freeze_prototypes_steps", "method.bn_groups": "bn_groups",
    "model.arch": "arch", "model.stem": "stem", "model.dim": "dim", "optim.lr": "lr",
    "optim.momentum": "optim_momentum", "optim.nesterov": "nesterov",
    "optim.weight_decay": "weight_decay", "optim.warmup_steps": "warmup_steps",
    "data.batch": "batch", "step": "step", "total_steps": "total_steps",
}


def config_from_metadata(meta):
    """Config from a dump's __metadata__ (string values); KeyError names the first missing key."""
    types = {f.name: f.type for f in fields(Config)}
    kw = {}
    for key, field in METADATA_KEYS.items():
        if key not in meta:
            raise KeyError(key)
        t = types[field]
        text = meta[key]
        try:
            kw[field] = str(text) if t in (str, "str") else (
                float(text) if t in (float, "float") else int(float(text)))
        except ValueError:
            raise ValueError(f"metadata {key} = {text!r} is not a number") from None
    cfg = Config(**kw)
    world = int(meta.get("world_size", "1"))
    if world > 1:  # several processes: each process is one BN group, bn_groups ignored (§5)
        cfg.bn_groups = world
    if cfg.method not in METHODS:
        raise ValueError(f"metadata method.name = {cfg.method!r} is not one of {', '.join(METHODS)}")
    return cfg


def config_to_metadata(cfg, lr_step):
    """The inverse of config_from_metadata (floats as %.9g, METHOD.md §8) plus lr_step."""
    meta = {}
    for key, field in METADATA_KEYS.items():
        v = getattr(cfg, field)
        meta[key] = "%.9g" % v if isinstance(v, float) else str(v)
    meta["lr_step"] = "%.9g" % lr_step
    meta["epoch"] = "0"
    meta["world_size"] = "1"
    meta["run.precision"] = "fp32"
    return meta


def lr_at(cfg, step):
    """METHOD.md §5: lr(s) = base_lr * B/256 * ((s+1)/W if s < W else 1/2 (1 + cos(pi (s-W)/(S-W))))."""
    S, W = cfg.total_steps, cfg.warmup_steps
    if S <= W:
        raise ValueError(f"total_steps {S} <= optim.warmup_steps {W} (METHOD.md §5)")
    scale = cfg.lr * cfg.batch / 256.0
    if step < W:
        return scale * (step + 1) / W
    return scale * 0.5 * (1.0 + math.cos(math.pi * (step - W) / (S - W)))


def norm(x, dim=1):
    """METHOD.md §1: x / max(|x|_2, 1e-12) along `dim`."""
    return F.normalize(x, p=2.0, dim=dim, eps=1e-12)


# ---------------------------------------------------------------------------------------------
# Networks: torchvision ResNet with grouped BatchNorm, the DenseCL necks (METHOD.md §2)
# ---------------------------------------------------------------------------------------------

class GroupedBatchNorm2d(nn.Module):
    """Training-mode BN over groups of N/G consecutive images (METHOD.md §5).

    Same parameter and buffer names as nn.BatchNorm2d (weight, bias, running_mean, running_var,
    num_batches_tracked). Each group is normalized by F.batch_norm with its own statistics and no
    running buffers; the running update is done here: r <- (1-0.1) r + 0.1 * mean over groups of
    the group's mean / unbiased variance.
    """

    def __init__(self, channels, groups):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups
        if n % g:
            raise ValueError(f"batch {n} is not divisible by method.bn_groups {g}")
        count = (n // g) * h * w
        if count <= 1:
            raise ValueError(f"a BN group holds {count} value per channel (needs > 1)")
        outs = []
        means = []
        variances = []
        for xg in x.chunk(g, dim=0):
            outs.append(F.batch_norm(xg, None, None, self.weight, self.bias, True, 0.0, BN_EPS))
            with torch.no_grad():
                var, mean = torch.var_mean(xg, dim=(0, 2, 3), unbiased=True)
                means.append(mean)
                variances.append(var)
        with torch.no_grad():
            mean = torch.stack(means).mean(0)
            var = torch.stack(variances).mean(0)
            self.running_mean.mul_(1 - BN_MOMENTUM).add_(mean.to(self.running_mean.dtype), alpha=BN_MOMENTUM)
            self.running_var.mul_(1 - BN_MOMENTUM).add_(var.to(self.running_var.dtype), alpha=BN_MOMENTUM)
            self.num_batches_tracked.add_(1)
        return torch.cat(outs, dim=0) if g > 1 else outs[0]


def build_backbone(arch, stem, groups):
    """torchvision's ResNet (weights=None), fc removed, every BN grouped; stem=small: conv1 3x3/1/1
    without bias and no max-pool (METHOD.md §1). Its state_dict keys are torchvision's."""
    if arch not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"model.arch {arch!r} is not resnet18, resnet34 or resnet50")
    net = getattr(torchvision.models, arch)(weights=None)
    if stem == "small":
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    elif stem != "standard":
        raise ValueError(f"model.stem {stem!r} is not standard or small")
    del net.fc
    del net.avgpool
    for name, mod in list(net.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                bn = GroupedBatchNorm2d(child.num_features, groups)
                setattr(mod, child_name, bn)
    return net


def c5_size(stem, size):
    """Side S of the C5 map for input side `size`: each stride-2 stage gives ceil(x/2)
    (conv1 and max-pool of the standard stem, layer2, layer3, layer4)."""
    for _ in range(3 if stem == "small" else 5):
        size = (size + 1) // 2
    return size


def backbone_forward(net, x):
    """C5 map h (N,C,S,S) of the torchvision ResNet `net`."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class Neck(nn.Module):
    """DenseCLNeck without BN (METHOD.md §2): mlp (global) and, unless moco-v2, mlp2 (dense, 1x1 convs)."""

    def __init__(self, c, d, dense):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, d))
        self.mlp2 = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, d, 1)) if dense else None


class Encoder(nn.Module):
    """Backbone + necks; names backbone.* and neck.* (METHOD.md §8)."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg.arch, cfg.stem, cfg.bn_groups)
        c = 2048 if cfg.arch == "resnet50" else 512
        self.neck = Neck(c, cfg.dim, cfg.dense)

    def heads(self, h):
        """(g(h) unnormalized (N,D), d(h) unnormalized (N,D,S,S) or None) of METHOD.md §2."""
        z = self.neck.mlp(h.mean(dim=(2, 3)))
        dmap = self.neck.mlp2(h) if self.neck.mlp2 is not None else None
        return z, dmap


# ---------------------------------------------------------------------------------------------
# Losses and the clustering pieces (METHOD.md §4)
# ---------------------------------------------------------------------------------------------

def infonce(q, pos, queue, tau):
    """Rows r: logits [q_r . pos[r,0..npos), q_r . queue] / tau; loss_r = lse(all) - lse(positives).
    q (R,D), pos (R,npos,D), queue (D,L). Mean over rows (METHOD.md §4.1-4.3)."""
    lpos = torch.einsum("rd,rkd->rk", q, pos) / tau
    lneg = (q @ queue) / tau
    logits = torch.cat([lpos, lneg], dim=1)
    if logits.dtype in (torch.float16, torch.bfloat16):  # under autocast: float32 as cross_entropy
        logits = logits.float()
        lpos = lpos.float()
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(lpos, dim=1)).mean()


def sinkhorn(scores, eps, iters):
    """METHOD.md §4.6: SwAV's Sinkhorn-Knopp on scores (B,K); returns codes (B,K), rows summing to 1."""
    b, k = scores.shape
    x = scores / eps
    x = x - x.max()
    q = torch.exp(x).t()
    q = torch.where(q < FLT_MIN, torch.zeros_like(q), q)
    q = q / q.sum().clamp_min(FLT_MIN)
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True).clamp_min(FLT_MIN)
        q = q / k
        q = q / q.sum(dim=0, keepdim=True).clamp_min(FLT_MIN)
        q = q / b
    q = q * b
    return q.t()


def first_argmax(scores):
    """argmax over the last dim, ties to the smallest index (METHOD.md §1)."""
    top = scores.max(dim=-1, keepdim=True).values
    idx = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
    big = scores.shape[-1]
    return torch.where(scores == top, idx, torch.full_like(idx, big)).min(dim=-1).values


class Choices:
    """Resolves discrete choices against given ones and records the score gaps of the mismatches."""

    def __init__(self, given):
        self.given = given or {}
        self.gaps = {}      # kind -> 1-D float64 tensor of |score(ours) - score(given)| at mismatches
        self.counts = {}    # kind -> number of choices compared
        self.ours = {}      # kind -> our own choices (int64)

    def resolve(self, kind, scores, ours):
        """scores (..., M), ours (...): returns the given choice where one is given, else ours.
        An out-of-range given index counts as an infinite gap."""
        self.ours[kind] = ours.clone()
        given = self.given.get(kind)
        if given is None:
            return ours
        given = torch.as_tensor(given, dtype=torch.long, device=ours.device).reshape(ours.shape)
        m = scores.shape[-1]
        valid = (given >= 0) & (given < m)
        gc = given.clamp(0, m - 1)
        s_ours = scores.gather(-1, ours.unsqueeze(-1)).squeeze(-1)
        s_given = scores.gather(-1, gc.unsqueeze(-1)).squeeze(-1)
        gap = (s_ours - s_given).abs().to(torch.float64)
        gap = torch.where(s_ours == s_given, torch.zeros_like(gap), gap)  # equal (also both -inf)
        gap = torch.where(valid, gap, torch.full_like(gap, math.inf))
        self._record_gaps(kind, gap[(given != ours) | ~valid], ours.numel())
        return gc

    def _record_gaps(self, kind, gaps, count):
        empty = torch.zeros(0, dtype=torch.float64, device=gaps.device)
        self.gaps[kind] = torch.cat([self.gaps.get(kind, empty), gaps.flatten()])
        self.counts[kind] = self.counts.get(kind, 0) + count


def neighbors(choices, ua, k):
    """METHOD.md §4.3: the k pixels j != i of the same image with the largest ua_i . ua_j, in
    decreasing similarity, ties by smallest j. ua (N,P,C) normalized. Returns (N,P,k) int64."""
    n, p, _ = ua.shape
    sim = ua @ ua.transpose(1, 2)
    eye = torch.eye(p, dtype=torch.bool, device=ua.device).expand(n, p, p)
    masked = sim.masked_fill(eye, -math.inf)
    ours = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]
    choices.ours["nei.idx"] = ours.clone()
    given = choices.given.get("nei.idx")
    if given is None:
        return ours
    given = torch.as_tensor(given, dtype=torch.long, device=ua.device).reshape(ours.shape)
    valid = (given >= 0) & (given < p)
    gc = given.clamp(0, p - 1)
    self_idx = torch.arange(p, device=ua.device).view(1, p, 1)
    valid &= gc != self_idx
    for t in range(1, k):  # distinct within a row
        valid[..., t] &= (gc[..., :t] != gc[..., t:t + 1]).all(dim=-1)
    gap = (sim.gather(-1, ours) - sim.gather(-1, gc)).abs()
    gap = torch.where(valid, gap, torch.full_like(gap, math.inf))
    choices._record_gaps("nei.idx", gap[(given != ours) | ~valid], ours.numel())
    return gc


def kmeans(choices, v, init, iters):
    """METHOD.md §4.5 step 2: spherical k-means on v (R,D) from init (K,D). Returns (labels of the
    last iteration (R,), centroids after the last update (K,D))."""
    m = init.clone()
    k = m.shape[0]
    labels = None
    given = choices.given.get("km.history")
    if given is not None:
        given = torch.as_tensor(given, dtype=torch.long, device=v.device)
        if given.shape[0] != iters:
            raise ValueError(f"km.history has {given.shape[0]} rows, method.km_iters is {iters}")
        given = given.reshape(iters, -1)
    history = []
    for t in range(iters):
        scores = v @ m.t()
        ours = first_argmax(scores)
        sub = Choices({"y": given[t]} if given is not None else None)
        labels = sub.resolve("y", scores, ours)
        history.append(ours)
        if given is not None:
            choices._record_gaps("km.history", sub.gaps["y"], sub.counts["y"])
        sums = torch.zeros_like(m).index_add(0, labels, v.to(m.dtype))  # autocast: v may be bf16
        counts = torch.bincount(labels, minlength=k).to(m.dtype)
        present = counts > 0
        means = sums / counts.clamp_min(1).unsqueeze(1)
        m = torch.where(present.unsqueeze(1), norm(means, dim=1), m)
    choices.ours["km.history"] = torch.stack(history)
    return labels, m


def loss_kmeans(va, ya, vb, yb, k, tau):
    """METHOD.md §4.5 steps 4-5: cluster-level contrast of the clusters present in both views."""
    present = sorted(set(ya.tolist()) & set(yb.tolist()))  # host sync: the method needs the set
    if len(present) < 2:
        return torch.zeros((), dtype=va.dtype, device=va.device)
    idx = torch.tensor(present, device=va.device)
    d = va.shape[1]
    ea = torch.zeros(k, d, dtype=va.dtype, device=va.device).index_add(0, ya, va)[idx]
    eb = torch.zeros(k, d, dtype=vb.dtype, device=vb.device).index_add(0, yb, vb)[idx]
    ea = norm(ea / torch.bincount(ya, minlength=k)[idx].to(va.dtype).unsqueeze(1), dim=1)
    eb = norm(eb / torch.bincount(yb, minlength=k)[idx].to(vb.dtype).unsqueeze(1), dim=1)
    return F.cross_entropy(ea @ eb.t() / tau, torch.arange(len(present), device=va.device))


# ---------------------------------------------------------------------------------------------
# The model state and the step (METHOD.md §5)
# ---------------------------------------------------------------------------------------------

class Model:
    """Online and momentum encoders, queues, k-means centroids, prototypes and SGD buffers."""

    def __init__(self, cfg, dtype=torch.float64, seed=0):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.dtype = dtype
        self.online = Encoder(cfg).to(dtype)
        self.key = Encoder(cfg).to(dtype)
        self.key.load_state_dict(self.online.state_dict())  # both encoders start identical (§5)
        for p in self.key.parameters():
            p.requires_grad_(False)
        d, L = cfg.dim, cfg.queue
        self.queue_global = norm(torch.randn(d, L, generator=g, dtype=dtype), dim=0)
        self.queue_dense = norm(torch.randn(d, L, generator=g, dtype=dtype), dim=0) if cfg.dense else None
        self.queue_ptr = torch.tensor(0, dtype=torch.long)
        self.km_centroids = torch.zeros(cfg.clusters, d, dtype=dtype) if cfg.uses_kmeans else None
        self.prototypes = None
        if cfg.uses_prototypes:
            bound = 1.0 / math.sqrt(d)  # nn.Linear(D, K, bias=False) init (§4.6)
            self.prototypes = nn.Parameter((torch.rand(cfg.prototypes, d, generator=g, dtype=dtype) * 2 - 1) * bound)
        self.buffers = {name: torch.zeros_like(p) for name, p in self.params().items()}

    def to_device(self, device, memory_format=torch.preserve_format):
        """Moves encoders, queues, centroids, prototypes and SGD buffers to `device`, the encoders'
        4-D tensors to `memory_format` (e.g. channels_last), each SGD buffer to its parameter's
        layout; values unchanged. queue.ptr stays a host scalar (enqueue reads it without a sync)."""
        for enc in (self.online, self.key):
            enc.to(device=device, memory_format=memory_format)
        self.queue_global = self.queue_global.to(device)
        if self.queue_dense is not None:
            self.queue_dense = self.queue_dense.to(device)
        if self.km_centroids is not None:
            self.km_centroids = self.km_centroids.to(device)
        if self.prototypes is not None:
            self.prototypes = nn.Parameter(self.prototypes.detach().to(device))
        self.buffers = {name: torch.empty_like(p).copy_(self.buffers[name])
                        for name, p in self.params().items()}
        return self

    def params(self):
        """Trainable tensors by checkpoint name: online backbone, necks, prototypes."""
        out = dict(self.online.named_parameters())
        if self.prototypes is not None:
            out["prototypes.weight"] = self.prototypes
        return out

    def state(self):
        """Every checkpoint tensor (METHOD.md §8), detached copies."""
        out = {k: v.detach().clone() for k, v in self.online.state_dict().items()}
        out.update({"momentum." + k: v.detach().clone() for k, v in self.key.state_dict().items()})
        out["queue.global"] = self.queue_global.clone()
        if self.queue_dense is not None:
            out["queue.dense"] = self.queue_dense.clone()
        out["queue.ptr"] = self.queue_ptr.clone()
        if self.km_centroids is not None:
            out["km.centroids"] = self.km_centroids.clone()
        if self.prototypes is not None:
            out["prototypes.weight"] = self.prototypes.detach().clone()
        out.update({"optim.momentum." + k: v.clone() for k, v in self.buffers.items()})
        return out

    def load(self, state):
        """Loads every checkpoint tensor of `state` (dict name -> tensor); KeyError names a missing one."""
        own = self.state()
        missing = [k for k in own if k not in state]
        if missing:
            raise KeyError(missing[0])

        def get(k):
            v = torch.as_tensor(state[k])
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"{k}: shape {list(v.shape)}, expected {list(own[k].shape)}")
            return v.to(device=own[k].device, dtype=own[k].dtype).clone()

        self.online.load_state_dict({k: get(k) for k in self.online.state_dict()})
        self.key.load_state_dict({k: get("momentum." + k) for k in self.key.state_dict()})
        self.queue_global = get("queue.global")
        if self.queue_dense is not None:
            self.queue_dense = get("queue.dense")
        self.queue_ptr = get("queue.ptr")
        if self.km_centroids is not None:
            self.km_centroids = get("km.centroids")
        if self.prototypes is not None:
            with torch.no_grad():
                self.prototypes.copy_(get("prototypes.weight"))
        self.buffers = {k: get("optim.momentum." + k) for k in self.buffers}

    def step(self, xa, xb, perm, lr, km_init=None, discrete=None, autocast=None):
        """One training step in METHOD.md §5's order. xa, xb (N,3,H,W); perm (N,) the shuffle-BN
        permutation; lr the step's learning rate; km_init the centroids k-means starts from (dsc-km;
        default: km.centroids, which must then be initialized); discrete: given choices to follow;
        autocast: None, or the dtype (torch.bfloat16) of a torch.autocast around the forward passes
        and the losses. Computes on xa's device, where the model must be (to_device).
        Returns a dict: loss.* (0-dim), grad.<name>, choices (Choices), vb (the key pixels (N,P,D))."""
        cfg = self.cfg
        choices = Choices(discrete)
        dt = self.dtype
        xa = torch.as_tensor(xa).to(dt)
        dev = xa.device
        xb = torch.as_tensor(xb).to(device=dev, dtype=dt)
        perm = torch.as_tensor(perm, dtype=torch.long)
        n = xa.shape[0]
        if sorted(perm.tolist()) != list(range(n)):  # on perm's own device, before any work
            raise ValueError("perm.key is not a permutation of the batch")
        perm = perm.to(dev)

        def amp():
            if autocast is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=dev.type, dtype=autocast)
        frozen = self.prototypes is not None and cfg.step < cfg.freeze_prototypes_steps

        # (0) prototypes: row normalization at the start of every step, no gradient (§4.6).
        if self.prototypes is not None:
            with torch.no_grad():
                self.prototypes.copy_(norm(self.prototypes, dim=1))

        # (1) EMA of the momentum encoder over parameters only (§5).
        with torch.no_grad():
            online = dict(self.online.named_parameters())
            for name, pk in self.key.named_parameters():
                pk.mul_(cfg.momentum).add_(online[name], alpha=1.0 - cfg.momentum)

        # (2) key forward with shuffle-BN: row i of the shuffled batch is image perm[i] (§5).
        with torch.no_grad(), amp():
            hs = backbone_forward(self.key.backbone, xb[perm])
            hb = torch.empty_like(hs)
            hb[perm] = hs
            zb_raw, db = self.key.heads(hb)
            zb = norm(zb_raw, dim=1)
            if cfg.dense:
                vb = norm(db, dim=1).flatten(2).transpose(1, 2)          # (N,P,D)
                wb = norm(db.mean(dim=(2, 3)), dim=1)                     # (N,D)
                ub = norm(hb, dim=1).flatten(2).transpose(1, 2)          # (N,P,C)

        # (3) query forward, losses (under autocast when asked), backward.
        with amp():
            ha = backbone_forward(self.online.backbone, xa)
            za_raw, da = self.online.heads(ha)
            za = norm(za_raw, dim=1)
            zero = torch.zeros((), dtype=dt, device=dev)
            l_ins = infonce(za, zb.unsqueeze(1), self.queue_global, cfg.tau_ins)  # §4.1
            l_pix = zero
            l_sem = zero
            if cfg.dense:
                va = norm(da, dim=1).flatten(2).transpose(1, 2)              # (N,P,D)
                ua = norm(ha.detach(), dim=1).flatten(2).transpose(1, 2)     # (N,P,C)
                p = va.shape[1]
                d = va.shape[2]
                sim = ua @ ub.transpose(1, 2)                                 # (N,P,P) §3
                c = choices.resolve("match.c", sim, first_argmax(sim))
                pos = vb.gather(1, c.unsqueeze(-1).expand(n, p, d))           # v^b[n,:,c(n,i)]
                q = va.reshape(n * p, d)
                pos_rows = pos.reshape(n * p, 1, d)
                l_pix = infonce(q, pos_rows, self.queue_dense, cfg.tau_pix)   # §4.2
                if cfg.uses_neighbors:
                    nei = neighbors(choices, ua, cfg.k_nei)                    # (N,P,k) §4.3
                    m = va.detach().unsqueeze(1).expand(n, p, p, d).gather(
                        2, nei.unsqueeze(-1).expand(n, p, cfg.k_nei, d)).reshape(n * p, cfg.k_nei, d)
                    if cfg.method == "dsc-nei":
                        l_sem = infonce(q, torch.cat([pos_rows, m], dim=1), self.queue_dense, cfg.tau_sem)
                    else:  # §4.4, delta(x,y) = 1 - x.y
                        dpos = 1.0 - (q * pos_rows[:, 0]).sum(1, keepdim=True)
                        dneg = 1.0 - torch.einsum("rd,rkd->rk", q, m)
                        l_sem = F.relu(dpos - dneg + cfg.margin).sum(1).mean()
                elif cfg.uses_kmeans:  # §4.5
                    vbf = vb.reshape(n * p, d)
                    if km_init is None:
                        if not bool(self.km_centroids.abs().sum() > 0):
                            raise ValueError("dsc-km: km.centroids uninitialized and no km.init given")
                        km_init = self.km_centroids
                    km_init = torch.as_tensor(km_init).to(device=dev, dtype=dt)
                    yb, self.km_centroids = kmeans(choices, vbf, km_init, cfg.km_iters)
                    choices.ours["km.history"] = choices.ours["km.history"].view(cfg.km_iters, n, p)
                    ya = yb.view(n, p).gather(1, c).reshape(-1)
                    l_sem = loss_kmeans(q, ya, vbf, yb, cfg.clusters, cfg.tau_sem)
                elif cfg.uses_prototypes:  # §4.6, §4.7
                    C = self.prototypes
                    # flat index of (n, c(n,i))
                    rows = (torch.arange(n, device=dev).unsqueeze(1) * p + c).reshape(-1)
                    sa = q @ C.t()
                    sb = vb.reshape(n * p, d) @ C.t()
                    with torch.no_grad():
                        qb = sinkhorn(sb.detach(), cfg.sinkhorn_eps, cfg.sinkhorn_iters)
                    if cfg.method == "dsc-pm":
                        with torch.no_grad():
                            qa = sinkhorn(sa.detach(), cfg.sinkhorn_eps, cfg.sinkhorn_iters)
                        t1 = -(qb[rows] * F.log_softmax(sa / cfg.tau_pm, dim=1)).sum(1)
                        t2 = -(qa * F.log_softmax(sb[rows] / cfg.tau_pm, dim=1)).sum(1)
                        l_sem = (t1 + t2).mean()
                    else:
                        codes = qb[rows].view(n, p, -1)
                        logq = cfg.sinkhorn_eps * torch.log(codes)  # gap units: eps * log q ~ scores
                        t = choices.resolve("ce.target", logq, first_argmax(codes))
                        l_sem = F.cross_entropy(sa / cfg.tau_pm, t.reshape(-1))
            total = cfg.lambda_ins * l_ins + cfg.lambda_pix * l_pix + cfg.lambda_sem * l_sem
        params = self.params()
        for p_ in params.values():
            p_.grad = None
        total.backward()
        grads = {}
        for name, p_ in params.items():
            g = p_.grad if p_.grad is not None else torch.zeros_like(p_)
            if name == "prototypes.weight" and frozen:
                g = torch.zeros_like(p_)
            grads[name] = g.detach().clone()

        # (4) SGD, torch.optim.SGD semantics (§5): g' = g + wd θ; buf = μ buf + g';
        #     θ -= lr (g' + μ buf) with Nesterov, θ -= lr buf without. Frozen prototypes: untouched.
        with torch.no_grad():
            mu, wd = cfg.optim_momentum, cfg.weight_decay
            for name, p_ in params.items():
                if name == "prototypes.weight" and frozen:
                    continue
                g = grads[name] + wd * p_
                buf = self.buffers[name]
                buf.mul_(mu).add_(g)
                p_.sub_(lr * (g + mu * buf) if cfg.nesterov else lr * buf)

        # (5) enqueue the keys in the original batch order; both queues share one pointer (§3).
        ptr = int(self.queue_ptr)
        L = self.queue_global.shape[1]
        if L % n:
            raise ValueError(f"method.queue {L} is not a multiple of the batch {n}")
        self.queue_global[:, ptr:ptr + n] = zb.t()
        if cfg.dense:
            self.queue_dense[:, ptr:ptr + n] = wb.t()
        self.queue_ptr = torch.tensor((ptr + n) % L, dtype=torch.long)

        out = {"loss.ins": l_ins.detach(), "loss.pix": l_pix.detach(), "loss.sem": l_sem.detach(),
               "loss.total": total.detach(), "choices": choices}
        out.update({"grad." + k: v for k, v in grads.items()})
        if cfg.dense:
            out["vb"] = vb  # the key pixels (for checking km.init against them)
        return out


class ReluProbe:
    """Hooks on the online encoder's ReLUs (DESIGN.md §8).

    Counts, per module, the inputs with 0 < |x| <= rel * max|x| of that call: a float32
    implementation may give such an input the other sign, which moves the gradient discontinuously.
    `near` maps module name -> count; `candidates` lists (|x| / max|x|, name, call, flat index),
    call being the module's call number within the step (a torchvision block calls its ReLU twice).
    `flips`, a set of (name, call, flat index), makes the step take the other sign there: the
    forward value changes by at most |x|, the gradient passes where it did not, and not where it did.
    """

    def __init__(self, encoder, rel, flips=()):
        self.rel = rel
        self.flips = set(flips)
        self.near = {}
        self.candidates = []
        self.calls = {}
        self.saved = {}
        self.handles = []
        flip_names = {f[0] for f in self.flips}
        for name, mod in encoder.named_modules():
            if isinstance(mod, nn.ReLU):
                if name in flip_names:
                    mod.inplace = False  # the forward hook needs the input
                self.handles.append(mod.register_forward_pre_hook(self._pre(name)))
                self.handles.append(mod.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(_mod, inp):
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            x = inp[0].detach()
            scale = float(x.abs().max())
            near = (x.abs() <= self.rel * scale) & (x != 0)
            self.near[name] = self.near.get(name, 0) + int(near.sum())
            for i in near.flatten().nonzero().flatten().tolist():
                self.candidates.append((float(x.flatten()[i].abs()) / scale, name, call, i))
        return hook

    def _post(self, name):
        def hook(_mod, inp, out):
            call = self.calls[name] - 1
            idx = [f[2] for f in self.flips if f[0] == name and f[1] == call]
            if not idx:
                return None
            x = inp[0].flatten()
            sel = torch.zeros_like(x)
            sel[torch.tensor(idx, device=x.device)] = 1.0
            on = (x > 0).to(x.dtype)
            # where x > 0 the output becomes 0 (x - x); where x < 0 it becomes x (tiny) with gradient 1
            return (out.flatten() + sel * (1 - 2 * on) * x).view_as(out)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def reference_step(state, inputs, config, discrete=None, dtype=torch.float64, lr=None, relu_tie=None,
                   relu_flips=()):
    """Everything a step dump holds, recomputed (spec/INTERFACES.md "The step dump").

    state: dict checkpoint name -> tensor (before the step); inputs: dict with `input.a`, `input.b`
    [N,3,H,W], `perm.key` [N], and for dsc-km `km.init` [K,D]; config: a Config; discrete: None or a
    dict of given choices (`match.c`, `nei.idx`, `km.history`, `ce.target`) to follow; lr: the step's
    learning rate (default lr_at(config, config.step)).
    Returns a dict: loss.*, grad.<name>, after.<name> (tensors), the step's own discrete choices
    under their dump names, and `choices` (the Choices object: gaps and counts of mismatches);
    with relu_tie, also `relu.probe` (a ReluProbe of the online encoder: near-tie counts and
    candidates); relu_flips: ReLU inputs (name, call, flat index) given the other sign (ReluProbe).
    """
    model = Model(config, dtype=dtype)
    model.load(state)
    probe = None
    if relu_tie is not None or relu_flips:
        probe = ReluProbe(model.online, relu_tie if relu_tie is not None else 0.0, relu_flips)
    if lr is None:
        lr = lr_at(config, config.step)
    out = model.step(inputs["input.a"], inputs["input.b"], inputs["perm.key"], lr,
                     km_init=inputs.get("km.init"), discrete=discrete)
    if probe is not None:
        probe.remove()
        out["relu.probe"] = probe
    choices = out["choices"]
    for kind, ours in choices.ours.items():
        out[kind] = ours
    out.update({"after." + k: v for k, v in model.state().items()})
    return out

"""golden_init.py: the deterministic parameter generator shared by the PyTorch reference and the C tests.

The golden fixtures do not store parameters: both sides regenerate them from a tensor's name, so the
definition below is the contract (tools/reference/README.md repeats it with test vectors).

  h      = FNV-1a 32-bit of the tensor's name as bytes (UTF-8; names are ASCII):
           h = 2166136261; for each byte b: h = ((h ^ b) * 16777619) mod 2^32.
           Names are torchvision's state_dict keys ("layer1.0.conv1.weight", "bn1.running_var", ...)
           or "input", "head.weight", "head.bias", "head.target".
  i      = 0-based index of the element in PyTorch's contiguous order of the tensor in its PyTorch
           layout (NCHW for inputs, OIHW for conv weights, [out, in] for the head).
  key    = (h << 32) | i                                  (uint64)
  z      = splitmix64(key), all arithmetic mod 2^64:
             z = key + 0x9E3779B97F4A7C15
             z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
             z = (z ^ (z >> 27)) * 0x94D049BB133111EB
             z = z ^ (z >> 31)
  u      = (z >> 40) * 2^-24                              (exact, in [0, 1))
  value  = float32(center + half * (2u - 1))              (computed in float64, rounded once)

  (center, half) by tensor kind:
    conv weight (4-D, OIHW)     (0, sqrt(3) * sqrt(2 / fan_out)),  fan_out = out_ch * kh * kw
    BN weight                   (1, 0.25)
    BN bias                     (0, 0.1)
    BN running_mean             (0, 0.1)
    BN running_var              (1, 0.25)
    head.weight [10, C]         (0, 1 / sqrt(C))
    head.bias [10]              (0, 0.1)
    input [N, 3, H, W]          (0, 1)
    head.target [N, 10]         (0, 1)
  BN num_batches_tracked starts at 0 (not generated). torchvision's fc.* is not used.

numpy uint64 arithmetic wraps mod 2^64, which is what splitmix64 needs; the pure-Python scalar
version (golden_value_scalar) is an independent check of the vectorized one.
"""

import math

import numpy as np

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
SM_GAMMA = 0x9E3779B97F4A7C15
SM_MUL1 = 0xBF58476D1CE4E5B9
SM_MUL2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1


def fnv1a32(name):
    """FNV-1a 32-bit hash of the name's bytes."""
    h = FNV_OFFSET
    for b in name.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def splitmix64_scalar(key):
    """splitmix64 of one Python int (reference for the vectorized version)."""
    z = (key + SM_GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * SM_MUL1) & MASK64
    z = ((z ^ (z >> 27)) * SM_MUL2) & MASK64
    return z ^ (z >> 31)


def splitmix64(keys):
    """splitmix64 of a uint64 numpy array (wrap-around arithmetic)."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(SM_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(SM_MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(SM_MUL2)
        return z ^ (z >> np.uint64(31))


def golden_uniform(name, shape, center, half):
    """float32 array of `shape`: element i = float32(center + half * (2u_i - 1)) as defined above."""
    shape = tuple(int(d) for d in shape)
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if numel >= (1 << 32):
        raise ValueError(f"{name}: {numel} elements do not fit the 32-bit index of the key")
    h = np.uint64(fnv1a32(name))
    keys = (h << np.uint64(32)) | np.arange(numel, dtype=np.uint64)
    z = splitmix64(keys)
    u = (z >> np.uint64(40)).astype(np.float64) * (2.0 ** -24)
    vals = float(center) + float(half) * (2.0 * u - 1.0)
    return vals.astype(np.float32).reshape(shape)


def golden_value_scalar(name, index, center, half):
    """One element computed with Python ints and floats only (independent of numpy's uint64)."""
    key = (fnv1a32(name) << 32) | index
    z = splitmix64_scalar(key)
    u = (z >> 40) * (2.0 ** -24)
    return float(np.float32(center + half * (2.0 * u - 1.0)))


def golden_range(name, shape):
    """(center, half) for a tensor, from its name and shape, per the table in the module docstring."""
    shape = tuple(int(d) for d in shape)
    if name == "input" or name == "head.target":
        return 0.0, 1.0
    if name == "head.weight":
        return 0.0, 1.0 / math.sqrt(shape[1])
    if name == "head.bias":
        return 0.0, 0.1
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) == 4:
        fan_out = shape[0] * shape[2] * shape[3]
        return 0.0, math.sqrt(3.0) * math.sqrt(2.0 / fan_out)
    if leaf == "weight" and len(shape) == 1:
        return 1.0, 0.25
    if leaf == "bias" and len(shape) == 1:
        return 0.0, 0.1
    if leaf == "running_mean":
        return 0.0, 0.1
    if leaf == "running_var":
        return 1.0, 0.25
    raise ValueError(f"golden_range: no rule for tensor {name!r} of shape {shape}")


def golden_tensor(name, shape):
    """The generated float32 array for a named tensor."""
    center, half = golden_range(name, shape)
    return golden_uniform(name, shape, center, half)


def print_test_vectors():
    """Prints values a reimplementation can check itself against (README.md lists them)."""
    cases = [("input", (2, 3, 64, 64)), ("conv1.weight", (64, 3, 3, 3)),
             ("layer1.0.bn1.running_var", (64,)), ("head.weight", (10, 2048))]
    for name, shape in cases:
        center, half = golden_range(name, shape)
        t = golden_uniform(name, shape, center, half).reshape(-1)
        h = fnv1a32(name)
        z0 = splitmix64_scalar(h << 32)
        vals = ", ".join(f"[{i}] {float(t[i]):.9g}" for i in (0, 1, t.size - 1))
        print(f"{name} {list(shape)}: fnv1a32 0x{h:08x}, splitmix64(key of [0]) 0x{z0:016x}, "
              f"center {center!r} half {half!r}: {vals}")


if __name__ == "__main__":
    print_test_vectors()


def fill_golden(model):
    """Sets every tensor of a torch model's state dict to golden_tensor(name, shape) (in place, without
    gradients), num_batches_tracked counters to 0, and returns the model: the weights every golden
    ResNet fixture shares with dsc's test initializer (tests/golden_init.h)."""
    import torch
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.zero_()
            else:
                t.copy_(torch.from_numpy(golden_tensor(name, t.shape)))
    return model


SAMPLE_COUNT = 4096


def put_sampled(out, name, t, sample_count=SAMPLE_COUNT):
    """Stores a float torch tensor into the dict `out` in full (F32) or, above sample_count elements, as
    name@sample (sample_count evenly spaced elements, F32) + name@norm (its L2 norm, F64): how the
    ResNet fixtures keep large gradients and activations small (tests/test_resnet_golden.c)."""
    import torch
    t = t.detach().to(torch.float64).contiguous()
    if t.numel() <= sample_count:
        out[name] = t.numpy().astype(np.float32)
        return
    flat = t.reshape(-1)
    idx = (np.arange(sample_count, dtype=np.int64) * t.numel()) // sample_count
    out[name + "@sample"] = flat.numpy()[idx].astype(np.float32)
    out[name + "@norm"] = np.array(torch.linalg.vector_norm(flat).item(), dtype=np.float64)

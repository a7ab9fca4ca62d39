"""safetensors_py.py: a minimal safetensors writer and reader (struct + json + numpy, no pip packages).

Format: 8-byte little-endian unsigned header length N, then N bytes of UTF-8 JSON, then the data.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
the start of the data, tensors packed contiguously, little-endian, row-major), plus an optional
"__metadata__" object of string -> string. The writer pads the JSON with spaces to a multiple of 8
bytes, lays the tensors out by decreasing element size and then by name (so each one starts at a
multiple of its element size, as the reference implementation does) and writes the JSON with sorted
keys, so equal inputs give equal bytes.
0-dimensional tensors have shape [] and one element.
"""

import json
import struct

import numpy as np

# safetensors dtype name <-> numpy dtype (little-endian). BF16 has no numpy type and is not supported.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _dtype_name(arr):
    for name, dt in DTYPES.items():
        if arr.dtype.newbyteorder("<") == dt:
            return name
    raise ValueError(f"safetensors: unsupported dtype {arr.dtype}")


def encode(tensors, metadata=None):
    """bytes of a safetensors file holding `tensors` (dict name -> numpy array) and `metadata`."""
    header = {}
    chunks = []
    offset = 0
    arrays = {}
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("safetensors: '__metadata__' is not a tensor name")
        arrays[name] = np.asarray(value)
    # Wider element types first, then by name: every tensor starts at a multiple of its element size.
    for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n)):
        arr = arrays[name]
        dname = _dtype_name(arr)
        data = np.ascontiguousarray(arr, dtype=DTYPES[dname]).tobytes()
        header[name] = {"dtype": dname, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"safetensors: metadata must be str -> str, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(path, tensors, metadata=None):
    """Writes `tensors` and `metadata` to `path` as safetensors."""
    blob = encode(tensors, metadata)
    with open(path, "wb") as f:
        f.write(blob)
    return len(blob)


def decode(blob):
    """(tensors, metadata) from the bytes of a safetensors file; checks offsets and sizes."""
    if len(blob) < 8:
        raise ValueError("safetensors: file shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"safetensors: header length {n} exceeds the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    expect = 0
    tensors = {}
    for name, info in entries:
        dt = DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"safetensors: {name}: unsupported dtype {info['dtype']}")
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if begin != expect or end - begin != numel * dt.itemsize or end > len(data):
            raise ValueError(f"safetensors: {name}: bad data_offsets [{begin}, {end}] "
                             f"for {info['dtype']} {list(shape)}")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(shape).copy()
        expect = end
    if expect != len(data):
        raise ValueError(f"safetensors: {len(data) - expect} bytes after the last tensor")
    return tensors, metadata


def read(path):
    """(tensors, metadata) of the safetensors file at `path`."""
    with open(path, "rb") as f:
        return decode(f.read())

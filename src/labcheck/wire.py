"""A data-only codec between the grader and the untrusted worker.

Never pickle: unpickling bytes a submission controls would run its code in the grader.
A message is a JSON header plus raw array buffers; decoding builds only None, bool, int,
float, str, list, tuple, dict (str keys), numpy arrays and CPU torch tensors of whitelisted
dtypes, within size limits. Anything else is refused with WireError.
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import torch

MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB; a reply larger than this is a hostile or broken submission
# The JSON part (structure, numbers in plain lists) is decoded into Python objects, ~50x its size in memory:
# capped, so that decoding stays linear and small in the reply's size; bulk data travels as binary buffers
# (tensors, arrays: one copy each). The largest header an example submission's replies have is far below it.
MAX_HEADER_BYTES = 4 << 20
MAX_DEPTH = 32
_DTYPES = {
    "float16": (np.float16, torch.float16), "float32": (np.float32, torch.float32),
    "float64": (np.float64, torch.float64), "int8": (np.int8, torch.int8), "uint8": (np.uint8, torch.uint8),
    "int16": (np.int16, torch.int16), "int32": (np.int32, torch.int32), "int64": (np.int64, torch.int64),
    "bool": (np.bool_, torch.bool),
}
_TORCH_NAMES = {t: name for name, (_, t) in _DTYPES.items()}
_NUMPY_NAMES = {np.dtype(n): name for name, (n, _) in _DTYPES.items()}


class WireError(ValueError):
    """A message that is not well-formed data."""


def _float(x: float):
    # JSON has no NaN/inf; keep them as tagged strings so NaN outputs stay visible to the grader.
    if math.isfinite(x):
        return x
    return {"__float__": repr(x)}


def encode(obj) -> bytes:
    buffers: list[bytes] = []

    def enc(o, depth=0):
        if depth > MAX_DEPTH:
            raise WireError("structure nested too deeply")
        if o is None or isinstance(o, (bool, str)):
            return o
        if isinstance(o, int):
            return o if abs(o) < 2**62 else {"__bigint__": str(o)}
        if isinstance(o, float):
            return _float(o)
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return enc(o.item(), depth)
        if isinstance(o, torch.Tensor):
            t = o.detach()
            if t.is_complex():
                raise WireError("complex tensors cannot cross the sandbox boundary")
            if t.dtype not in _TORCH_NAMES:
                t = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)
            meta = {"__tensor__": len(buffers), "dtype": _TORCH_NAMES[t.dtype], "shape": list(t.shape),
                    "device": str(o.device), "requires_grad": bool(o.requires_grad), "orig_dtype": str(o.dtype)}
            buffers.append(t.cpu().contiguous().numpy().tobytes())
            return meta
        if isinstance(o, np.ndarray):
            a = np.ascontiguousarray(o)
            if a.dtype not in _NUMPY_NAMES:
                if a.dtype.kind not in "iuf":
                    raise WireError(f"numpy arrays of dtype {a.dtype} cannot cross the sandbox boundary")
                a = a.astype(np.float64 if a.dtype.kind == "f" else np.int64)
            buffers.append(a.tobytes())
            return {"__ndarray__": len(buffers) - 1, "dtype": _NUMPY_NAMES[a.dtype], "shape": list(a.shape)}
        if isinstance(o, tuple):
            return {"__tuple__": [enc(v, depth + 1) for v in o]}
        if isinstance(o, list):
            return [enc(v, depth + 1) for v in o]
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o):
                raise WireError("dict keys must be strings")
            if any(k.startswith("__") and k.endswith("__") for k in o):
                return {"__dict__": [[k, enc(v, depth + 1)] for k, v in o.items()]}
            return {k: enc(v, depth + 1) for k, v in o.items()}
        raise WireError(f"cannot send a {type(o).__name__} across the sandbox boundary")

    header = json.dumps(enc(obj)).encode()
    parts = [struct.pack(">II", len(header), len(buffers)), header]
    for b in buffers:
        parts += [struct.pack(">Q", len(b)), b]
    return b"".join(parts)


def decode(data: bytes):
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message too large")
    try:
        header_len, n_buffers = struct.unpack(">II", data[:8])
        if header_len > MAX_HEADER_BYTES:
            raise WireError(f"the reply's structure has {header_len / 2**20:.1f} MB of plain values (at most "
                            f"{MAX_HEADER_BYTES >> 20} MB): return tensors or arrays, not long Python lists")
        header = json.loads(data[8 : 8 + header_len])
        pos = 8 + header_len
        buffers = []
        for _ in range(n_buffers):
            (n,) = struct.unpack(">Q", data[pos : pos + 8])
            pos += 8
            if pos + n > len(data):
                raise WireError("truncated buffer")
            buffers.append(data[pos : pos + n])
            pos += n
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WireError(f"malformed message: {e}") from None

    def array(meta, key):
        idx, dtype, shape = meta[key], meta["dtype"], meta["shape"]
        if dtype not in _DTYPES or not isinstance(idx, int) or not 0 <= idx < len(buffers):
            raise WireError("bad array header")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise WireError("bad array shape")
        np_dtype = np.dtype(_DTYPES[dtype][0])
        if int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize != len(buffers[idx]):
            raise WireError("array size does not match its shape")
        return np.frombuffer(buffers[idx], dtype=np_dtype).reshape(shape).copy()

    def dec(o, depth=0):
        if depth > MAX_DEPTH:
            raise WireError("structure nested too deeply")
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if isinstance(o, list):
            return [dec(v, depth + 1) for v in o]
        if isinstance(o, dict):
            if "__tensor__" in o:
                t = torch.from_numpy(array(o, "__tensor__"))
                return t
            if "__ndarray__" in o:
                return array(o, "__ndarray__")
            if "__tuple__" in o:
                return tuple(dec(v, depth + 1) for v in o["__tuple__"])
            if "__float__" in o:
                text = o["__float__"]
                if text not in ("nan", "inf", "-inf"):
                    raise WireError("bad float")
                return float(text)
            if "__bigint__" in o:
                return int(str(o["__bigint__"])[:4000])
            if "__dict__" in o:
                return {str(k): dec(v, depth + 1) for k, v in o["__dict__"]}
            return {str(k): dec(v, depth + 1) for k, v in o.items()}
        raise WireError(f"unexpected JSON value {type(o).__name__}")

    return dec(header)


def tensor_meta(obj) -> dict | None:
    """Device and dtype of an encoded tensor are lost on decode; probes report them explicitly."""
    if isinstance(obj, torch.Tensor):
        return {"dtype": str(obj.dtype), "shape": list(obj.shape), "device": str(obj.device),
                "requires_grad": bool(obj.requires_grad)}
    return None


# Framing on a byte stream: 8-byte big-endian length, then the message.

def write_frame(fd: int, payload: bytes) -> None:
    import os

    for data in (struct.pack(">Q", len(payload)), payload):  # no concatenated copy of a large payload
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

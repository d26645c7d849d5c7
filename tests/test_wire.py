"""labcheck.wire: the data-only codec between grader and worker (never pickle)."""
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from labcheck import wire

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))
PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@given(PLAIN)
def test_plain_data_round_trips(value):
    assert wire.decode(wire.encode(value)) == value


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.int8, torch.uint8,
                                   torch.int16, torch.int32, torch.int64, torch.bool])
def test_tensors_round_trip_with_dtype_and_shape(dtype):
    t = (torch.arange(24) % 3).to(dtype).reshape(2, 3, 4)  # (2, 3, 4)
    out = wire.decode(wire.encode({"t": t, "empty": torch.zeros(0, 5, dtype=dtype)}))
    assert out["t"].dtype == dtype and torch.equal(out["t"], t)
    assert out["empty"].shape == (0, 5)


def test_nan_inf_and_special_keys_survive():
    value = {"__tensor__": [math.nan, math.inf, -math.inf], "x": torch.tensor([math.nan, 1.0]),
             "a": np.array([[1.5, math.nan]]), "t": (1, [2, (3,)])}
    out = wire.decode(wire.encode(value))
    assert math.isnan(out["__tensor__"][0]) and out["__tensor__"][1:] == [math.inf, -math.inf]
    assert torch.isnan(out["x"][0]) and out["x"][1] == 1.0
    assert isinstance(out["a"], np.ndarray) and np.isnan(out["a"][0, 1]) and out["t"] == (1, [2, (3,)])


def test_grad_tensors_and_other_dtypes_are_plain_copies():
    t = torch.ones(3, requires_grad=True) * 2
    out = wire.decode(wire.encode([t, torch.ones(2, dtype=torch.bfloat16), np.ones(2, dtype=np.uint32)]))
    assert not out[0].requires_grad and out[1].dtype == torch.float64 and out[2].dtype == np.int64


@pytest.mark.parametrize("value", [lambda: 1, object(), {1: "int key"}, {"s": {1, 2}}, torch.nn.Linear(2, 2),
                                   torch.ones(2, dtype=torch.complex64), np.array(["text"]),
                                   np.array([object()])])
def test_anything_but_data_is_refused(value):
    with pytest.raises(wire.WireError):
        wire.encode(value)


def _message(header: bytes, buffers=()) -> bytes:
    parts = [struct.pack(">II", len(header), len(buffers)), header]
    for b in buffers:
        parts += [struct.pack(">Q", len(b)), b]
    return b"".join(parts)


@pytest.mark.parametrize("data", [
    b"\x00\x00",
    _message(b"{not json"),
    _message(b'{"__tensor__": 0, "dtype": "object", "shape": [1]}', [b"\x00" * 8]),
    _message(b'{"__tensor__": 0, "dtype": "float32", "shape": [3]}', [b"\x00" * 8]),
    _message(b'{"__tensor__": 5, "dtype": "float32", "shape": [1]}', [b"\x00" * 4]),
    _message(b'{"__ndarray__": 0, "dtype": "float32", "shape": [-1]}', [b"\x00" * 4]),
    _message(b'{"__float__": "__import__(\'os\')"}'),
    _message(b"[" * 40 + b"]" * 40),
    _message(b"[1]", [b"\x00" * 4])[:-2],
])
def test_malformed_messages_are_refused(data):
    with pytest.raises(wire.WireError):
        wire.decode(data)


def test_frames_are_length_prefixed(tmp_path):
    import os

    r, w = os.pipe()
    wire.write_frame(w, b"abc")
    os.close(w)
    assert os.read(r, 100) == struct.pack(">Q", 3) + b"abc"
    os.close(r)

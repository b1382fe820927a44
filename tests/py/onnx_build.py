"""Writing small ONNX models in tests without the onnx package (CI installs only pytest, numpy,
onnxruntime and selenium): the protobuf wire format of the few ModelProto fields a test model
needs, field numbers from onnx.proto.

    g = Graph("net")
    g.input("x", np.float32, ["N", 3, "H", "W"])      # str dims are symbolic, None unnamed
    g.init("W", w)                                     # or g.const("W", w): a Constant node
    g.node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    g.output("y", np.float32, ["N", 4, "H", "W"])
    g.save(path, opset=13)
"""
import struct

import numpy as np

_DTYPE = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): 6,
          np.dtype(np.int64): 7, np.dtype(np.float64): 11}


def _varint(n):
    n &= (1 << 64) - 1   # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _int(field, n):
    return _key(field, 0) + _varint(n)


def _bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return _key(field, 2) + _varint(len(b)) + b


def _packed(field, ints):
    return _bytes(field, b"".join(_varint(int(i)) for i in ints))


def tensor(name, arr):
    """TensorProto with raw_data (little-endian, as ONNX specifies)."""
    arr = np.ascontiguousarray(arr)
    return (_packed(1, arr.shape) + _int(2, _DTYPE[arr.dtype]) + _bytes(8, name) +
            _bytes(9, arr.astype(arr.dtype.newbyteorder("<")).tobytes()))


def _attr(name, v):
    b = _bytes(1, name)
    if isinstance(v, float):
        return b + _key(2, 5) + struct.pack("<f", v) + _int(20, 1)
    if isinstance(v, (int, np.integer)):
        return b + _int(3, int(v)) + _int(20, 2)
    if isinstance(v, str):
        return b + _bytes(4, v) + _int(20, 3)
    if isinstance(v, np.ndarray):
        return b + _bytes(5, tensor("", v)) + _int(20, 4)
    if all(isinstance(x, float) for x in v):
        return b + _bytes(7, b"".join(struct.pack("<f", x) for x in v)) + _int(20, 6)
    return b + _packed(8, v) + _int(20, 7)


def value_info(name, dtype, dims):
    shape = b""
    for d in dims:
        shape += _bytes(1, b"" if d is None else _bytes(2, d) if isinstance(d, str) else _int(1, d))
    tt = _int(1, _DTYPE[np.dtype(dtype)]) + (_bytes(2, shape) if dims is not None else b"")
    return _bytes(1, name) + _bytes(2, _bytes(1, tt))


class Graph:
    def __init__(self, name):
        self.name = name
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._n = 0

    def input(self, name, dtype, dims):
        self.inputs.append(value_info(name, dtype, dims))

    def output(self, name, dtype, dims):
        self.outputs.append(value_info(name, dtype, dims))

    def init(self, name, arr):
        self.inits.append(tensor(name, arr))

    def const(self, name, arr):
        """arr as a Constant node's value (as Paddle's exporter writes weights)."""
        self.node("Constant", [], [name], value=np.asarray(arr))

    def node(self, op, inputs, outputs, name=None, domain="", **attrs):
        self._n += 1
        b = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
        b += _bytes(3, name or "%s_%d" % (op.lower(), self._n)) + _bytes(4, op)
        b += b"".join(_bytes(5, _attr(k, v)) for k, v in attrs.items())
        if domain:
            b += _bytes(7, domain)
        self.nodes.append(b)

    def bytes(self, opset=13, ir_version=7):
        g = b"".join(_bytes(1, n) for n in self.nodes) + _bytes(2, self.name)
        g += b"".join(_bytes(5, t) for t in self.inits)
        g += b"".join(_bytes(11, v) for v in self.inputs) + b"".join(_bytes(12, v) for v in self.outputs)
        return (_int(1, ir_version) + _bytes(2, "onnx_build.py") + _bytes(7, g) +
                _bytes(8, _bytes(1, "") + _int(2, opset)))

    def save(self, path, opset=13, ir_version=7):
        with open(path, "wb") as f:
            f.write(self.bytes(opset, ir_version))
        return path

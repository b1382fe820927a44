"""One-node models for timing Resize and the normalizations at image and transformer sizes with
bench/bench_engine.py (quant vs ONNX Runtime):

    /work/venv-tools/bin/python bench/make_op_models.py /tmp/op-models      # needs onnx
    .venv/bin/python bench/bench_engine.py --quant build/quant --fixtures /tmp/op-models \\
        --models resize_linear_224x2 resize_cubic_224x2 resize_nearest_640x2 resize_linear_640_half \\
                 layernorm_197x768 groupnorm_32x64x64 --batches 1 --threads 1

Results are in docs/benchmarks.md ("Resize and the normalizations").
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def save(path, nodes, x_shape, y_shape, inits, opset):
    g = helper.make_graph(nodes, os.path.basename(path), [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    onnx.save(m, path)


def resize(out, name, hw, mode, coord, scale):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=coord)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, scale, scale])
    o = int(hw * scale)
    save(os.path.join(out, name + ".onnx"), [node], ["N", 3, hw, hw], ["N", 3, o, o], [scales], 13)


def main(out):
    os.makedirs(out, exist_ok=True)
    resize(out, "resize_linear_224x2", 224, "linear", "half_pixel", 2.0)
    resize(out, "resize_cubic_224x2", 224, "cubic", "half_pixel", 2.0)
    resize(out, "resize_nearest_640x2", 640, "nearest", "asymmetric", 2.0)
    resize(out, "resize_linear_640_half", 640, "linear", "half_pixel", 0.5)
    d = 768
    ln = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1)
    save(os.path.join(out, "layernorm_197x768.onnx"), [ln], ["N", 197, d], ["N", 197, d],
         [helper.make_tensor("w", TensorProto.FLOAT, [d], np.ones(d)),
          helper.make_tensor("b", TensorProto.FLOAT, [d], np.zeros(d))], 17)
    c = 64
    gn = helper.make_node("GroupNormalization", ["x", "w", "b"], ["y"], num_groups=32)
    save(os.path.join(out, "groupnorm_32x64x64.onnx"), [gn], ["N", c, 64, 64], ["N", c, 64, 64],
         [helper.make_tensor("w", TensorProto.FLOAT, [c], np.ones(c)),
          helper.make_tensor("b", TensorProto.FLOAT, [c], np.zeros(c))], 21)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/op-models")

#!/usr/bin/env python3
"""Writes the small malformed ONNX models in Tests/KilnCLITests/Fixtures/ that the CLI tests feed to kiln (needs PyPI onnx)."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Tests", "KilnCLITests", "Fixtures")


def model(nodes, initializers=()):
    graph = helper.make_graph(
        nodes, "fixture",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln-fixtures")


def main():
    os.makedirs(OUT, exist_ok=True)
    # A Conv whose weight initializer is missing.
    onnx.save(model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")]),
              os.path.join(OUT, "missing_initializer.onnx"))
    # Two unsupported op types in three nodes.
    onnx.save(model([helper.make_node("Hardmax", ["x"], ["a"], name="hardmax1"),
                     helper.make_node("LSTM", ["a"], ["b"], name="lstm"),
                     helper.make_node("Hardmax", ["b"], ["y"], name="hardmax2")]),
              os.path.join(OUT, "unsupported_ops.onnx"))
    # A valid conv model without BatchNormalization (inspect warns).
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    onnx.save(model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                     helper.make_node("Relu", ["c"], ["y"], name="relu")], [weight]),
              os.path.join(OUT, "no_batchnorm.onnx"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()

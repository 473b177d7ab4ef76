#!/usr/bin/python3
"""Writes small ONNX graphs (onnx.helper) that reproduce what real exporters emit, with inputs at
two sizes, into tests/data/idioms/<name>/: model.onnx, input_K.npy. The expected outputs
(output_K.npy) come from ONNX Runtime: scripts/idiom_expected.js (needs scripts/install-peers.sh).
tests/test_exporter_idioms.cpp runs every one on tern and compares.

    /usr/bin/python3 scripts/make_idiom_models.py && node scripts/idiom_expected.js
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "idioms")
rng = np.random.default_rng(7)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def weights(name, *shape, scale=0.3):
    return const(name, (rng.standard_normal(shape) * scale).astype(np.float32))


def save(name, nodes, inputs, outputs, inits, sizes, opset=13, dtype=np.float32):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tern idioms")
    model.ir_version = 8
    onnx.checker.check_model(model)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for k, shape in enumerate(sizes):
        np.save(os.path.join(d, f"input_{k}.npy"), rng.standard_normal(shape).astype(dtype))
    print(name, [tuple(s) for s in sizes])


def dyn(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def paddle_reshape():
    """Paddle's Shape -> Cast(int32) -> Slice -> Concat -> Cast(int64) -> Reshape on a dynamic batch."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="p2o.Conv.0"),
        helper.make_node("Shape", ["c"], ["s"], name="p2o.Shape.0"),
        helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32, name="p2o.Cast.0"),
        helper.make_node("Slice", ["s32", "zero", "one", "zero"], ["n"], name="p2o.Slice.0"),
        helper.make_node("Concat", ["n", "tail"], ["t32"], axis=0, name="p2o.Concat.0"),
        helper.make_node("Cast", ["t32"], ["t"], to=TensorProto.INT64, name="p2o.Cast.1"),
        helper.make_node("Reshape", ["c", "t"], ["r"], name="p2o.Reshape.0"),
        helper.make_node("MatMul", ["r", "fc"], ["y"], name="p2o.MatMul.0"),
    ]
    inits = [weights("w", 4, 3, 3, 3), const("zero", np.array([0], np.int64)), const("one", np.array([1], np.int64)),
             const("tail", np.array([-1, 4 * 6 * 5], np.int32)), weights("fc", 120, 7, scale=0.1)]
    save("paddle_reshape", nodes, [dyn("x", ["N", 3, 6, 5])], [dyn("y", ["N", 1, 7])], inits, [(2, 3, 6, 5), (1, 3, 6, 5)])


def tf_nhwc_conv():
    """tf2onnx: NHWC input, Transpose to NCHW around each convolution, dynamic batch, H and W."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "w", "b"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["cl"]),
        helper.make_node("Transpose", ["cl"], ["y"], perm=[0, 2, 3, 1]),
    ]
    inits = [weights("w", 8, 3, 3, 3), weights("b", 8), weights("w2", 8, 1, 3, 3), const("lo", np.float32(0)),
             const("hi", np.float32(6))]
    save("tf_nhwc_conv", nodes, [dyn("x", ["N", "H", "W", 3])], [dyn("y", ["N", "h", "w", 8])], inits,
         [(2, 9, 7, 3), (1, 12, 16, 3)])


def resize_from_shape():
    """Resize whose sizes are computed from the input's Shape (x2 on H and W), as detectors upsample a
    feature map to a dynamic size; then Resize by constant scales, nearest."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Slice", ["s", "i0", "i2"], ["nc"]),
        helper.make_node("Slice", ["s", "i2", "i4"], ["hw"]),
        helper.make_node("Cast", ["hw"], ["hwf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hwf", "two"], ["hw2f"]),
        helper.make_node("Cast", ["hw2f"], ["hw2"], to=TensorProto.INT64),
        helper.make_node("Concat", ["nc", "hw2"], ["sizes"], axis=0),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["up"], mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Resize", ["up", "", "scales"], ["y"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ]
    inits = [weights("w", 4, 2, 3, 3), const("i0", np.array([0], np.int64)), const("i2", np.array([2], np.int64)),
             const("i4", np.array([4], np.int64)), const("two", np.array([2.0], np.float32)),
             const("scales", np.array([1, 1, 1.5, 2], np.float32))]
    save("resize_from_shape", nodes, [dyn("x", ["N", 2, "H", "W"])], [dyn("y", ["N", 4, "h", "w"])], inits,
         [(2, 2, 5, 6), (1, 2, 8, 3)])


def dbnet_head():
    """A DBNet-style head: 3x3 conv, BatchNorm, ReLU, two 2x2 stride-2 ConvTranspose upsamplings, Sigmoid."""
    c = 8
    bn = lambda p, n: [weights(p + "g", n, scale=1.0), weights(p + "b", n), weights(p + "m", n),
                       const(p + "v", (np.abs(rng.standard_normal(n)) + 0.5).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "1g", "1b", "1m", "1v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("ConvTranspose", ["r", "t1", "tb1"], ["u1"], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["u1", "2g", "2b", "2m", "2v"], ["bn2"]),
        helper.make_node("Relu", ["bn2"], ["r2"]),
        helper.make_node("ConvTranspose", ["r2", "t2", "tb2"], ["u2"], strides=[2, 2]),
        helper.make_node("Sigmoid", ["u2"], ["y"]),
    ]
    inits = [weights("w", c, c, 3, 3)] + bn("1", c) + [weights("t1", c, c // 2, 2, 2), weights("tb1", c // 2)] + \
        bn("2", c // 2) + [weights("t2", c // 2, 1, 2, 2), weights("tb2", 1)]
    save("dbnet_head", nodes, [dyn("x", ["N", c, "H", "W"])], [dyn("y", ["N", 1, "h", "w"])], inits,
         [(2, c, 4, 5), (1, c, 6, 3)])


def attention():
    """Self-attention as exporters write it: Q/K/V MatMuls, heads split by a Reshape whose target is
    built from Shape, Transpose, scaled MatMul, Softmax, the inverse reshape, output projection,
    residual Add, LayerNormalization (opset 17). Dynamic batch and sequence length."""
    d, h = 16, 4
    def heads(src, dst):
        return [helper.make_node("Reshape", [src, "split_shape"], [dst + "_r"]),
                helper.make_node("Transpose", [dst + "_r"], [dst], perm=[0, 2, 1, 3])]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["t"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Unsqueeze", ["t", "ax0"], ["t1"]),
        helper.make_node("Concat", ["n1", "t1", "hd"], ["split_shape"], axis=0),
        helper.make_node("Concat", ["n1", "t1", "dd"], ["merge_shape"], axis=0),
        helper.make_node("MatMul", ["x", "wq"], ["q0"]), helper.make_node("MatMul", ["x", "wk"], ["k0"]),
        helper.make_node("MatMul", ["x", "wv"], ["v0"]),
    ] + heads("q0", "q") + heads("k0", "k") + heads("v0", "v") + [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Div", ["qk", "scale"], ["qks"]),
        helper.make_node("Softmax", ["qks"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "merge_shape"], ["om"]),
        helper.make_node("MatMul", ["om", "wo"], ["p"]),
        helper.make_node("Add", ["p", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "ln_g", "ln_b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    inits = [const("i0", np.array(0, np.int64)), const("i1", np.array(1, np.int64)), const("ax0", np.array([0], np.int64)),
             const("hd", np.array([h, d // h], np.int64)), const("dd", np.array([d], np.int64)),
             weights("wq", d, d), weights("wk", d, d), weights("wv", d, d), weights("wo", d, d),
             const("scale", np.float32(np.sqrt(d // h))), weights("ln_g", d, scale=1.0), weights("ln_b", d)]
    save("attention", nodes, [dyn("x", ["N", "T", d])], [dyn("y", ["N", "T", d])], inits, [(2, 5, d), (1, 9, d)],
         opset=17)


def se_blocks():
    """MobileNetV3's squeeze-excitation with HardSwish/HardSigmoid (PyTorch's alpha 1/6) and Paddle's
    HardSigmoid (alpha 0.2, beta 0.5) as separate ops, average pooled by ReduceMean."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["hs"]),
        helper.make_node("GlobalAveragePool", ["hs"], ["g"]),
        helper.make_node("Conv", ["g", "w1", "b1"], ["f1"]),
        helper.make_node("Relu", ["f1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["f2"]),
        helper.make_node("HardSigmoid", ["f2"], ["gate"], alpha=1.0 / 6, beta=0.5),
        helper.make_node("Mul", ["hs", "gate"], ["se"]),
        helper.make_node("ReduceMean", ["se"], ["g2"], axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["g2", "w3", "b3"], ["f3"]),
        helper.make_node("HardSigmoid", ["f3"], ["gate2"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["se", "gate2"], ["y"]),
    ]
    inits = [weights("w", c, 3, 3, 3), weights("w1", 4, c, 1, 1), weights("b1", 4), weights("w2", c, 4, 1, 1),
             weights("b2", c), weights("w3", c, c, 1, 1), weights("b3", c)]
    save("se_blocks", nodes, [dyn("x", ["N", 3, "H", "W"])], [dyn("y", ["N", c, "H", "W"])], inits,
         [(2, 3, 7, 6), (1, 3, 5, 9)], opset=14)


def crnn_head():
    """A CRNN recogniser's sequence head: the feature map squeezed to a sequence, a bidirectional
    LSTM, the two directions joined by Reshape(0, 0, -1), a GRU (linear_before_reset, as PyTorch
    exports it) and a reverse RNN. Dynamic batch and sequence length."""
    c, h1, h2 = 4, 6, 5
    nodes = [
        helper.make_node("Squeeze", ["x", "ax2"], ["s"]),
        helper.make_node("Transpose", ["s"], ["seq"], perm=[2, 0, 1]),
        helper.make_node("LSTM", ["seq", "w1", "r1", "b1"], ["y1", "", ""], hidden_size=h1, direction="bidirectional"),
        helper.make_node("Transpose", ["y1"], ["y1t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["y1t", "join"], ["j"]),
        helper.make_node("GRU", ["j", "w2", "r2", "b2"], ["y2", "h2"], hidden_size=h2, linear_before_reset=1),
        helper.make_node("Squeeze", ["y2", "ax1"], ["g"]),
        helper.make_node("RNN", ["g", "w3", "r3", "b3"], ["y3"], hidden_size=h2, direction="reverse"),
        helper.make_node("Squeeze", ["y3", "ax1"], ["y"]),
    ]
    inits = [const("ax2", np.array([2], np.int64)), const("ax1", np.array([1], np.int64)),
             const("join", np.array([0, 0, -1], np.int64)),
             weights("w1", 2, 4 * h1, c), weights("r1", 2, 4 * h1, h1), weights("b1", 2, 8 * h1),
             weights("w2", 1, 3 * h2, 2 * h1), weights("r2", 1, 3 * h2, h2), weights("b2", 1, 6 * h2),
             weights("w3", 1, h2, h2), weights("r3", 1, h2, h2), weights("b3", 1, 2 * h2)]
    save("crnn_head", nodes, [dyn("x", ["N", c, 1, "T"])], [dyn("y", ["T", "N", h2])], inits, [(2, c, 1, 7), (3, c, 1, 4)])


if __name__ == "__main__":
    for make in (paddle_reshape, tf_nhwc_conv, resize_from_shape, dbnet_head, attention, se_blocks, crnn_head):
        make()

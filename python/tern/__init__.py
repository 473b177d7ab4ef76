"""tern: ternary, 4-bit and 8-bit integer networks from ONNX models, for Debian's /usr/bin/python3.

    import numpy as np, tern
    fp32 = tern.load("models/resnet20.onnx")
    x, y = tern.load_images("fashion-mnist", fp32, split="train", limit=512)
    model = tern.quantize("models/resnet20.onnx", calib=x, weights="ternary", group=4, acts=8)
    xt, yt = tern.load_images("fashion-mnist", model)                 # the test split
    print(tern.evaluate(model, xt, yt, engine="integer"))            # {'top1': ..., 'images': ...}
    model.save("resnet20.tern")
    model.export("resnet20.qdq.onnx")                                 # QDQ ONNX for ONNX Runtime

Everything runs in tern's library (no command line): models are numpy in, numpy out; errors are
tern.Error with tern's one-line message; the GIL is released while a model runs or is quantized.
"""
from . import _tern
from ._tern import Error, Model

__all__ = ["Error", "Model", "load", "quantize", "compare", "inspect", "evaluate", "load_images"]


def load(path, level=None):
    """A model from an ONNX file or a .tern file (FP32, or quantized by tern). level: a quantized
    model's residual level (an int, or "max"). model.run(x, engine="simulated"|"integer"|"fp32")."""
    if level == "max":
        level = -1
    return _tern.load(str(path), level)


def quantize(onnx_path, calib=None, *, drop_images=None, drop_labels=None, **options):
    """Post-training quantization of an ONNX model, as `tern quantize` with the same options as
    keyword arguments (dashes as underscores; flags as True): weights="ternary"|"int4"|"int8"|...,
    method="fgq", group=4, acts=8, calibration="percentile"|"auto"|..., rounding="output",
    bias_correction=True, equalize=True, smooth=0.5, residual="size:60%", max_drop=1,
    data_free="dynamic", all_layers=True, ...

    calib: the calibration inputs, a float array [N, ...] of model inputs (preprocessed), or an
    iterable of such batches. With max_drop, drop_images (held-out inputs) and drop_labels.
    Returns the quantized model (save() it, export() it, run() it)."""
    return _tern.quantize(str(onnx_path), calib, drop_images, drop_labels, **options)


def _model(m):
    return m if isinstance(m, Model) else load(m)


def compare(reference, model, x, labels=None):
    """How far `model`'s outputs are from `reference`'s on inputs x (models or paths): one dict per
    output (sqnr_db, cosine, max_abs_error, top1_agreement, and top1 / ref_top1 with labels)."""
    return _tern.compare(_model(reference), _model(model), x, labels)


def inspect(model, level=None):
    """Layers, shapes, parameters, multiply-accumulates; for a quantized model its per-layer
    quantization, sizes and levels ("quantization"). A plain dict."""
    if isinstance(model, Model):
        return model.inspect()
    return load(model, level).inspect()


def evaluate(model, x, labels, engine="simulated", batch=256):
    """Top-1 and top-5 accuracy (percent) of a classifier's [N, classes] output on x."""
    import numpy as np
    model = _model(model)
    labels = np.asarray(labels)
    top1 = top5 = 0
    for i in range(0, len(x), batch):
        scores = model.run(x[i:i + batch], engine=engine)
        rank = (scores > scores[np.arange(len(scores)), labels[i:i + batch]][:, None]).sum(axis=1)
        top1 += int((rank < 1).sum())
        top5 += int((rank < 5).sum())
    n = len(x)
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images": n}


def load_images(spec, model, split="test", limit=0):
    """(inputs, labels) of a data set as the command line's --data SPEC (an image folder,
    "fashion-mnist", an IDX directory, an .npy array), made into `model`'s inputs by the
    preprocessing in its metadata. labels is None for unlabelled data."""
    return _tern.load_images(str(spec), _model(model), split, limit)

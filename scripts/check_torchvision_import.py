#!/usr/bin/python3
"""Exports torchvision models (random weights) to ONNX at several opsets and checks that tern imports
and runs each one with outputs matching PyTorch's: the classifiers, the segmentation models, SSDlite's
backbone and head, and the vision transformers (ViT, Swin). Dynamic batch everywhere; dynamic height
and width where the model allows (every CNN), checked at two input sizes from one exported file.

Run with Debian's Python (scripts/install-deps.sh python), after building tern:
    /usr/bin/python3 scripts/check_torchvision_import.py [--tern build/all/src/tern] [--out docs/results/torchvision_import.md]
Nothing is downloaded: architectures only, weights random (seeded), so what is checked is the
operator coverage and numerics of import + FP32 execution, not accuracy.
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision

CLASSIFIERS = [
    # (name, input size)
    ("resnet18", 64), ("resnet50", 64), ("resnext50_32x4d", 64), ("wide_resnet50_2", 64),
    ("vgg11_bn", 224), ("alexnet", 224), ("squeezenet1_1", 64), ("densenet121", 64),
    ("googlenet", 64), ("inception_v3", 299), ("mobilenet_v2", 64), ("mobilenet_v3_small", 64),
    ("mnasnet1_0", 64), ("shufflenet_v2_x1_0", 64), ("efficientnet_b0", 64), ("regnet_y_400mf", 64),
    ("convnext_tiny", 64),
]
SEGMENTATION = [("fcn_resnet50", 128), ("deeplabv3_mobilenet_v3_large", 128), ("lraspp_mobilenet_v3_large", 128)]
OPSETS = (11, 13, 17)


class Output(torch.nn.Module):
    """One tensor out of models that return dicts or lists (tern run writes the first output)."""

    def __init__(self, model, pick):
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, x):
        return self.pick(self.model, x)


def ssd_head(model, x):
    features = list(model.backbone(x).values())
    out = model.head(features)
    return torch.cat([out["bbox_regression"].flatten(1), out["cls_logits"].flatten(1)], 1)


def build(name):
    """(model, input size, dynamic H/W, opsets)"""
    torch.manual_seed(0)
    sizes = dict(CLASSIFIERS)
    if name in sizes:
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        # PyTorch 1.13 cannot export VGG's and AlexNet's adaptive pooling for a dynamic input size.
        dynamic_hw = name not in ("vgg11_bn", "alexnet")
        return getattr(torchvision.models, name)(weights=None, **kwargs), sizes[name], dynamic_hw, OPSETS
    if name in dict(SEGMENTATION):
        seg = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=False)
        return Output(seg, lambda m, x: m(x)["out"]), dict(SEGMENTATION)[name], True, (13, 17)
    if name == "ssdlite320_mobilenet_v3_large":
        ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
        return Output(ssd, ssd_head), 320, False, (13, 17)
    if name == "vit_b_16":
        return torchvision.models.vit_b_16(weights=None), 224, False, (13, 17)
    if name == "swin_t":
        return torchvision.models.swin_t(weights=None), 224, False, (13, 17)
    raise ValueError(name)


MODELS = [n for n, _ in CLASSIFIERS] + [n for n, _ in SEGMENTATION] + ["ssdlite320_mobilenet_v3_large", "vit_b_16", "swin_t"]


def run_tern(tern, onnx_path, x, tmp):
    in_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    np.save(in_path, x)
    if os.path.exists(out_path):
        os.remove(out_path)
    r = subprocess.run([tern, "run", onnx_path, "--input", in_path, "--output", out_path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return np.load(out_path)


def randomize_zero_parameters(model):
    """Some heads start at zero (ViT's classifier): an all-zero output would compare as equal."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)


def check(name, opset, tern, tmp):
    model, size, dynamic_hw, _ = build(name)
    randomize_zero_parameters(model)
    model = model.eval()  # after wrapping: export restores the training flag it found, on every child
    x = torch.randn(2, 3, size, size)
    onnx_path = os.path.join(tmp, f"{name}_{opset}.onnx")
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    torch.onnx.export(model, x, onnx_path, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": axes, "output": {0: "batch"}})
    model.eval()
    sizes = [size, size + 32] if dynamic_hw else [size]
    worst, checked = 0.0, []
    for s in sizes:
        x = torch.randn(2 if s == size else 1, 3, s, s)
        with torch.no_grad():
            want = model(x).numpy()
        try:
            got = run_tern(tern, onnx_path, x.numpy(), tmp)
        except RuntimeError as e:
            return "error", str(e).replace(onnx_path, f"{name}.onnx")[:300], sizes
        if got.shape != want.shape:
            return "fail", f"shape {got.shape} != {want.shape} at {s}x{s}", sizes
        worst = max(worst, float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-12)))
        checked.append(f"{x.shape[0]}x{s}x{s}")
    return ("pass" if worst < 1e-4 else "fail"), f"max error {worst:.1e} of the largest output magnitude", checked


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tern", default="build/all/src/tern")
    ap.add_argument("--out", default="docs/results/torchvision_import.md")
    ap.add_argument("--models", nargs="*", default=MODELS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # The tree the tern binary was built from: recorded before the run, not after it.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for opset in build(name)[3]:
                checked = []
                try:
                    status, detail, checked = check(name, opset, args.tern, tmp)
                except Exception as e:  # export failures are PyTorch's, reported as such
                    status, detail = "export failed", str(e).splitlines()[0][:120]
                rows.append((name, opset, ", ".join(str(c) for c in checked), status, detail))
                print(f"{name:30s} opset {opset}: {status:6s} {detail} {checked}", flush=True)
    passed = sum(1 for r in rows if r[3] == "pass")
    with open(args.out + ".tmp", "w") as f:
        f.write("# Importing torchvision models exported by PyTorch\n\n")
        f.write(f"Generated by `/usr/bin/python3 scripts/check_torchvision_import.py` on "
                f"{datetime.date.today()} at commit {commit}{' with uncommitted changes' if dirty else ''} "
                f"(torch {torch.__version__}, torchvision {torchvision.__version__}). "
                "Random (seeded) weights. Every model is exported once per opset with a dynamic batch axis, the CNNs "
                "also with dynamic height and width, and run at the sizes listed (batch x height x width) from that "
                "one file; *pass* = tern's FP32 output within 1e-4 of PyTorch's at every size, relative to the "
                "largest output magnitude. Segmentation models give their `out` map; SSDlite its backbone and head "
                "(box regression and class logits, flattened and joined).\n\n")
        f.write(f"**{passed} of {len(rows)} model/opset pairs pass.**\n\n")
        f.write("| model | opset | sizes run | result | detail |\n|---|---:|---|---|---|\n")
        for name, opset, sizes, status, detail in rows:
            f.write(f"| {name} | {opset} | {sizes} | {status} | {detail.replace('|', '/')} |\n")
    os.replace(args.out + ".tmp", args.out)
    print(f"{passed}/{len(rows)} pass; wrote {args.out}")


if __name__ == "__main__":
    main()

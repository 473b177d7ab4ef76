#!/usr/bin/python3
"""ImageNet-size models for speed measurements: torchvision architectures with random weights
(seeded; speed does not depend on the weights' values), exported to ONNX at 3x224x224 with a
dynamic batch and tern's preprocessing in the metadata (Fashion-MNIST images, grey replicated to
RGB and resized to 224, normalized with ImageNet's mean and std), so `tern quantize --data
fashion-mnist` calibrates them. Nothing is downloaded.

    /usr/bin/python3 scripts/make_imagenet_models.py [--out build/imagenet] [--models resnet50 ...]

Then e.g. /usr/bin/python3 scripts/bench_speed.py --imagenet (which runs this first).
"""
import argparse
import os
import sys

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(name, path):
    import onnx
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    tmp = path + ".tmp"
    torch.onnx.export(model, x, tmp, opset_version=14, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, do_constant_folding=True)
    m = onnx.load(tmp)
    meta = {"tern.channels": "rgb", "tern.resize": "224x224", "tern.mean": "0.485,0.456,0.406",
            "tern.std": "0.229,0.224,0.225", "tern.dataset": "fashion-mnist",
            "tern.note": f"torchvision {name}, random weights (torch.manual_seed(0)), for speed only"}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, tmp)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "build", "imagenet"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    paths = []
    for name in args.models:
        path = os.path.join(args.out, name + ".onnx")
        if not os.path.exists(path):
            print(f"make_imagenet_models.py: exporting {name}", file=sys.stderr, flush=True)
            export(name, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    print("\n".join(main()))

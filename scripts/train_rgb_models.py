#!/usr/bin/python3
"""Train real torchvision architectures on Fashion-MNIST upscaled to 96x96 RGB and export them to ONNX.

Test models for quantization with the layer kinds of deployed networks: depthwise convolutions,
squeeze-excitation, hard-swish / SiLU (MobileNetV3, EfficientNet), residual blocks (ResNet-18) and
multi-head attention with LayerNorm and GELU (a small Vision Transformer). Run by hand, once, with
Debian's Python (python3-torch, python3-torchvision, python3-onnx), one model after the other:
    /usr/bin/python3 scripts/train_rgb_models.py --model all
or one model, with its defaults (the table CONFIGS below) or overrides:
    /usr/bin/python3 scripts/train_rgb_models.py --model mobilenet_v3_small [--epochs N --train-limit N]
Each model's card records the exact single-model command that reproduces it.

Writes models/rgb/<name>.onnx (opset 13, dynamic batch, input "input" [batch,3,96,96], output
"logits" [batch,10], preprocessing in metadata_props) and models/rgb/<name>.json (the model card).

Input pipeline (tern's C++ preprocessing reproduces it from the metadata_props tern.scale,
tern.resize, tern.channels, tern.mean, tern.std): Fashion-MNIST 28x28 grey uint8 -> pixels / 255 ->
torch.nn.functional.interpolate to 96x96 (mode="bilinear", align_corners=False, antialias=False) ->
the grey channel repeated to 3 channels (RGB) -> (x - mean[c]) / std[c] with ImageNet's mean and std.
Training data: the Fashion-MNIST training set shipped by Debian's dataset-fashion-mnist (random crop
from 2-pixel zero padding and horizontal flip, on the 28x28 image before the resize). There is no
validation split: the test set gives the card's figure, and one choice was made after seeing it (the
switch of resnet18 from SGD to AdamW, and keeping SGD for efficientnet_b0, see CONFIGS).

Debian's torch has a generic (reference) BLAS: training runs convolutional nets in channels_last and
computes linear layers as 1x1 convolutions (fast_linear), both oneDNN paths; the export and the check
after it use plain torch, and the card records how far the two agree on test images.
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_reference import DATA_DIR, augment, read_idx  # noqa: E402  (shared with the bundled models)

SCALE_TEXT = "0.00392156862745098"  # 1/255, as written into tern.scale
RESIZE = 96
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ONNX_OPSET = 13

# Per-model defaults, chosen so that all five train in about 80 minutes on one CPU thread (2-core machine
# shared with compiler jobs). Measured training cost per image there (channels_last and fast_linear on):
# mobilenet_v3_small 4 ms, resnet18 22-30 ms, mobilenet_v3_large 10 ms, efficientnet_b0 21 ms, ViT 14 ms.
# train_limit: a fixed random subset of the 60000 training images (0 = all of them).
# opt "sgd": SGD nesterov momentum 0.9, one-cycle lr; opt "adamw": AdamW, one-cycle lr.
# With SGD lr 0.1, resnet18 diverged at the peak of the one-cycle (loss 1.7 -> 2.8, test top-1 78.7%);
# AdamW lr 1e-3 gave it 88.5%. efficientnet_b0: SGD 80.3%, AdamW lr 1e-3 wd 0.05 75.1% (both 313 steps:
# short for it; more epochs would help).
CONFIGS = {
    "mobilenet_v3_small": dict(epochs=2, train_limit=0, batch=128, opt="sgd", lr=0.1, wd=5e-5),
    "resnet18": dict(epochs=1, train_limit=40000, batch=128, opt="adamw", lr=1e-3, wd=0.05),
    "mobilenet_v3_large": dict(epochs=2, train_limit=40000, batch=128, opt="sgd", lr=0.1, wd=5e-5),
    "efficientnet_b0": dict(epochs=1, train_limit=40000, batch=128, opt="sgd", lr=0.1, wd=5e-5),
    "vit_tiny_p12": dict(epochs=2, train_limit=30000, batch=128, opt="adamw", lr=1e-3, wd=0.05),
}
ORDER = ["mobilenet_v3_small", "resnet18", "mobilenet_v3_large", "efficientnet_b0", "vit_tiny_p12"]
VIT = dict(image_size=RESIZE, patch_size=12, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256)

ARCH_TEXT = {
    "mobilenet_v3_small": "torchvision.models.mobilenet_v3_small(weights=None, num_classes=10): MobileNetV3-Small "
                          "(Howard et al. 2019): depthwise-separable inverted residuals, squeeze-excitation, "
                          "hard-swish / ReLU, hard-sigmoid gates, dropout 0.2 classifier",
    "resnet18": "torchvision.models.resnet18(weights=None, num_classes=10): ResNet-18 (He et al. 2016): 7x7/2 stem "
                "conv, 3x3/2 max pool, 4 stages x 2 basic blocks of 64/128/256/512 channels, global average pool, FC",
    "mobilenet_v3_large": "torchvision.models.mobilenet_v3_large(weights=None, num_classes=10): MobileNetV3-Large "
                          "(Howard et al. 2019): depthwise-separable inverted residuals, squeeze-excitation, "
                          "hard-swish / ReLU, hard-sigmoid gates, dropout 0.2 classifier",
    "efficientnet_b0": "torchvision.models.efficientnet_b0(weights=None, num_classes=10): EfficientNet-B0 (Tan & Le "
                       "2019): MBConv blocks with depthwise convs, squeeze-excitation, SiLU, stochastic depth 0.2 "
                       "(training only), dropout 0.2 classifier",
    "vit_tiny_p12": "torchvision.models.vision_transformer.VisionTransformer(image_size=96, patch_size=12, "
                    "num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256, num_classes=10): conv 12x12/12 patch "
                    "embedding (64 patches + class token), learned position embedding, 4 pre-LayerNorm encoder "
                    "blocks (multi-head self-attention, MLP with GELU), LayerNorm, linear head on the class token",
}


@contextlib.contextmanager
def fast_linear():
    """Computes F.linear as a 1x1 convolution (oneDNN) while training and evaluating.

    Debian's torch 1.13 is built with BLAS_INFO=generic: torch.mm / addmm go to the reference netlib BLAS,
    about 12x slower than oneDNN's convolution for the ViT's [n*65,128]x[128,384] products. Same result up to
    float rounding (~1e-5); never active during the ONNX export, which sees torch's own linear."""
    original = F.linear

    def linear(x, weight, bias=None):
        shape = x.shape
        y = F.conv2d(x.reshape(-1, shape[-1], 1, 1), weight[:, :, None, None], bias)
        return y.reshape(*shape[:-1], weight.shape[0])

    F.linear = linear  # nn.Linear.forward and F.multi_head_attention_forward look F.linear up at call time
    try:
        yield
    finally:
        F.linear = original


def has_attention(model):
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def build_model(name):
    if name == "vit_tiny_p12":
        from torchvision.models.vision_transformer import VisionTransformer
        return VisionTransformer(num_classes=10, **VIT)
    return getattr(torchvision.models, name)(weights=None, num_classes=10)


# ---------------------------------------------------------------- data
def load_split(split):
    """uint8 images [N,1,28,28] and int64 labels [N], as stored."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))


def preprocess(x):
    """uint8 [n,1,28,28] -> float [n,3,96,96]: the pipeline that tern.* metadata describes."""
    x = x.float() / 255.0
    x = F.interpolate(x, size=(RESIZE, RESIZE), mode="bilinear", align_corners=False, antialias=False)
    x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def predict(model, x, batch=250, fast=True, channels_last=False):
    """Logits of eval-mode model for uint8 images x. fast: under fast_linear(); for a model with
    nn.MultiheadAttention autograd stays on then, since under no_grad the attention takes its fused C++ path
    (aten::_native_multi_head_attention, generic-BLAS products) instead of F.multi_head_attention_forward."""
    model.eval()
    outs = []
    grad = fast and has_attention(model)
    with (fast_linear() if fast else contextlib.nullcontext()), torch.set_grad_enabled(grad):
        for i in range(0, len(x), batch):
            xb = preprocess(x[i:i + batch])
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            outs.append(model(xb).detach())
    return torch.cat(outs)


# ---------------------------------------------------------------- export
def export_onnx(model, path, sample):
    import onnx
    tmp_path = path + ".tmp"
    model.eval()
    # Exported with autograd enabled: under torch.no_grad() nn.MultiheadAttention (the ViT) takes its fused
    # fast path, aten::_native_multi_head_attention, which has no ONNX export.
    torch.onnx.export(model, torch.zeros(1, 3, RESIZE, RESIZE), tmp_path, opset_version=ONNX_OPSET,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(tmp_path)
    meta = (("tern.scale", SCALE_TEXT),
            ("tern.mean", ",".join(str(v) for v in IMAGENET_MEAN)),
            ("tern.std", ",".join(str(v) for v in IMAGENET_STD)),
            ("tern.resize", f"{RESIZE}x{RESIZE}"),
            ("tern.channels", "rgb"),
            ("tern.dataset", "fashion-mnist"))
    for key, value in meta:
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, tmp_path)
    os.replace(tmp_path, path)
    check_export(model, path, sample, dict(meta))


def check_export(model, path, sample, meta):
    """Checks without an ONNX runtime: the checker, the interface, the metadata, shape inference of the
    output, and that the torch model in export state gives the same logits for a batch as image by image
    (a dynamic batch that is really batch-independent: BatchNorm in eval mode, no batch statistics)."""
    import onnx
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    assert [i.name for i in inputs] == ["input"], inputs
    assert [o.name for o in graph.output] == ["logits"], graph.output

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert dims(inputs[0]) == ["batch", 3, RESIZE, RESIZE], dims(inputs[0])
    assert dims(graph.output[0]) == ["batch", 10], dims(graph.output[0])
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert dims(inferred.graph.output[0]) == ["batch", 10], dims(inferred.graph.output[0])
    assert {p.key: p.value for p in proto.metadata_props} == meta
    assert proto.opset_import[0].version == ONNX_OPSET
    model.eval()
    with torch.no_grad():
        batch_logits = model(sample)
        single = torch.cat([model(sample[i:i + 1]) for i in range(len(sample))])
    diff = (batch_logits - single).abs().max().item()
    assert diff < 1e-3, f"batch vs single-image logits differ by {diff}"
    ops = sorted({n.op_type for n in graph.node})
    print(f"checked {path}: {len(graph.node)} nodes, ops {','.join(ops)}; batch/single max diff {diff:.2e}",
          flush=True)


# ---------------------------------------------------------------- training
def make_optimizer(model, cfg, total_steps):
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases, norms, embeddings' 1-d
    groups = [{"params": decay, "weight_decay": cfg["wd"]}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg["opt"] == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=0.9, nesterov=True)
        text = (f"SGD nesterov momentum 0.9, weight decay {cfg['wd']:g} (not on biases / norm parameters), "
                f"one-cycle lr max {cfg['lr']:g} (15% warm-up, cosine), label smoothing 0.05")
    else:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999))
        text = (f"AdamW betas (0.9, 0.999), weight decay {cfg['wd']:g} (not on biases / norm parameters), "
                f"one-cycle lr max {cfg['lr']:g} (15% warm-up, cosine), label smoothing 0.05")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total_steps, pct_start=0.15,
                                                cycle_momentum=cfg["opt"] == "sgd")
    return opt, sched, text


def train_one(name, cfg, args, data):
    x_train_all, y_train_all, x_test, y_test = data
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = x_train_all, y_train_all
    if cfg["train_limit"]:
        # a fixed random subset (seeded), so that every class is represented evenly on average
        idx = torch.randperm(len(x_train_all), generator=torch.Generator().manual_seed(args.seed))[:cfg["train_limit"]]
        x_train, y_train = x_train_all[idx], y_train_all[idx]
    x_test, y_test = x_test[:args.test_limit or None], y_test[:args.test_limit or None]

    model = build_model(name)
    params = sum(p.numel() for p in model.parameters())
    channels_last = not has_attention(model)  # oneDNN's NHWC convolutions: ~2x faster for depthwise nets
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = cfg["batch"]
    steps_per_epoch = (len(x_train) + batch - 1) // batch
    opt, sched, opt_text = make_optimizer(model, cfg, cfg["epochs"] * steps_per_epoch)
    print(f"== {name}: {params} parameters, {len(x_train)} training images, {cfg['epochs']} epochs, "
          f"batch {batch}, {opt_text}", flush=True)
    start = time.time()
    with fast_linear():
        for epoch in range(cfg["epochs"]):
            model.train()
            perm = torch.randperm(len(x_train), generator=gen)
            total_loss, correct, seen = 0.0, 0, 0
            for step in range(steps_per_epoch):
                idx = perm[step * batch:(step + 1) * batch]
                xb = preprocess(augment(x_train[idx], gen, pad_value=0))  # zero (black) padding on the uint8 image
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                logits = model(xb)
                loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.05)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item()
                correct += (logits.argmax(1) == y_train[idx]).sum().item()
                seen += len(idx)
                if (step + 1) % 50 == 0:
                    print(f"  epoch {epoch + 1} step {step + 1}/{steps_per_epoch} "
                          f"loss {total_loss / (step + 1):.4f} train-acc {100.0 * correct / seen:.1f}% "
                          f"elapsed {time.time() - start:.0f}s", flush=True)
            print(f"epoch {epoch + 1}/{cfg['epochs']} loss {total_loss / steps_per_epoch:.4f} "
                  f"train-acc {100.0 * correct / seen:.2f}% elapsed {time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start
    eval_start = time.time()
    logits = predict(model, x_test, channels_last=channels_last)
    top1 = 100.0 * (logits.argmax(1) == y_test).sum().item() / len(x_test)
    print(f"{name}: test top-1 {top1:.2f}% on {len(x_test)} images ({time.time() - eval_start:.0f}s)", flush=True)

    # Back to plain torch for the export and the checks: contiguous (NCHW) weights, torch's own linear.
    model = model.to(memory_format=torch.contiguous_format)
    n_check = min(200, len(x_test))
    plain = predict(model, x_test[:n_check], fast=False)
    plain_diff = (plain - logits[:n_check]).abs().max().item()
    plain_agree = (plain.argmax(1) == logits[:n_check].argmax(1)).sum().item()
    print(f"plain torch vs fast_linear/channels_last on {n_check} test images: max logit diff {plain_diff:.2e}, "
          f"same class {plain_agree}/{n_check}", flush=True)
    assert plain_diff < 1e-2 and plain_agree >= n_check - 1, "plain torch disagrees with the training-time path"

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, f"{name}.onnx")
    export_onnx(model, onnx_path, preprocess(x_test[:4]))

    command = ["/usr/bin/python3", "scripts/train_rgb_models.py", "--model", name, "--epochs", str(cfg["epochs"]),
               "--train-limit", str(cfg["train_limit"]), "--batch", str(batch), "--opt", cfg["opt"],
               "--lr", f"{cfg['lr']:g}", "--wd", f"{cfg['wd']:g}", "--seed", str(args.seed),
               "--threads", str(args.threads)]
    if args.test_limit:
        command += ["--test-limit", str(args.test_limit)]
    card = {
        "name": name,
        "architecture": ARCH_TEXT[name],
        "parameters": params,
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test, 10 classes",
        "training_images": len(x_train),
        "training_subset": (f"a fixed random subset of {len(x_train)} of the 60000 training images "
                            f"(torch.randperm seeded with {args.seed})") if cfg["train_limit"] else None,
        "input": {
            "name": "input", "shape": [3, RESIZE, RESIZE], "source": "28x28 grey uint8",
            "scale": 1.0 / 255.0,
            "resize": {"size": [RESIZE, RESIZE], "mode": "bilinear", "align_corners": False, "antialias": False,
                       "function": "torch.nn.functional.interpolate"},
            "channels": "rgb: the grey channel repeated to 3 channels",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "order": "pixels / 255 -> resize 96x96 -> repeat to 3 channels -> (x - mean[c]) / std[c]",
        },
        "output": {"name": "logits", "shape": [10]},
        "metadata_props": {"tern.scale": SCALE_TEXT, "tern.mean": ",".join(str(v) for v in IMAGENET_MEAN),
                           "tern.std": ",".join(str(v) for v in IMAGENET_STD), "tern.resize": f"{RESIZE}x{RESIZE}",
                           "tern.channels": "rgb", "tern.dataset": "fashion-mnist"},
        "augmentation": "random crop 28 from 2-pixel zero padding, horizontal flip (on the 28x28 image, "
                        "before the resize; training only)",
        "optimizer": opt_text,
        "epochs": cfg["epochs"],
        "batch": batch,
        "seed": args.seed,
        "pytorch_test_top1": round(top1, 2),
        "pytorch_test_images": len(x_test),
        "pytorch_notes": ("training and the test figure use channels_last activations (convolutional nets) "
                          "and linear layers computed as 1x1 convolutions (Debian's torch has a generic BLAS); "
                          f"plain NCHW torch on the first {n_check} test images: max logit difference "
                          f"{plain_diff:.1e}, same class for {plain_agree}/{n_check}"),
        "training_seconds": round(train_seconds),
        "training_threads": args.threads,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "onnx_opset": ONNX_OPSET,
        "onnx_bytes": os.path.getsize(onnx_path),
        "command": " ".join(command),
    }
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.2f} MB)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True, choices=ORDER + ["all"],
                    help="one or more models, trained one after the other; 'all' = " + " ".join(ORDER))
    ap.add_argument("--epochs", type=int, help="override the model's default epochs")
    ap.add_argument("--train-limit", type=int, help="train on a fixed random subset of N images (0 = all 60000)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--opt", choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float)
    ap.add_argument("--wd", type=float)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images only (smoke tests)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "rgb"))
    args = ap.parse_args()
    names = ORDER if "all" in args.model else args.model

    torch.set_num_threads(args.threads)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    for name in names:
        cfg = dict(CONFIGS[name])
        for key in ("epochs", "train_limit", "batch", "opt", "lr", "wd"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        train_one(name, cfg, args, (x_train, y_train, x_test, y_test))


if __name__ == "__main__":
    main()

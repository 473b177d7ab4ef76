#!/usr/bin/python3
"""Train tern's bundled FP32 reference models on Fashion-MNIST and export them to ONNX.

Run by hand, once, with Debian's Python (python3-torch, python3-torchvision, python3-onnx):
    /usr/bin/python3 scripts/train_reference.py --model resnet20 --epochs 30
Writes models/<name>.onnx (opset 13, dynamic batch, input normalization in metadata_props as
tern.mean / tern.std) and models/<name>.json (the model card). Training data: the Fashion-MNIST
training set shipped by Debian's dataset-fashion-mnist; the test set is used only for the final
figure in the card, never for choices made during training.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN = 0.2860  # Fashion-MNIST training-set pixel mean and std (pixels / 255)
STD = 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - MEAN) / STD, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- models
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:  # projection shortcut (He et al. option B)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers, n=3): 3 stages of 16/32/64 channels."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)  # exported as a Shape/Gather/Unsqueeze/Concat/Reshape sub-graph
        return self.fc(x)


class SmallVGG(nn.Module):
    """VGG-style: 3x3 conv + BN + ReLU pairs, max pooling, two fully connected layers."""

    def __init__(self, num_classes=10):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(128 * 3 * 3, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(256, num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


class SmallMobileNetV2(nn.Module):
    """MobileNetV2-style: torchvision's InvertedResidual blocks (depthwise 3x3, ReLU6, linear bottleneck)."""

    def __init__(self, num_classes=10):
        super().__init__()
        from torchvision.models.mobilenetv2 import InvertedResidual
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True))
        # (expansion t, output channels c, repeats n, first stride s), as in the paper's table, scaled down
        config = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 1), (6, 96, 1, 1))
        blocks, cin = [], 16
        for t, c, n, s in config:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = x.mean([2, 3])  # exported as ReduceMean over the spatial axes
        return self.fc(self.dropout(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs: the LeNet-size net of low-precision training studies."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(F.relu(self.fc2(x)))


MODELS = {"lenet5": LeNet5, "resnet20": ResNet20, "vgg_small": SmallVGG, "mobilenetv2_small": SmallMobileNetV2}
ARCH_TEXT = {
    "lenet5": "LeNet-5: conv5x5(6, pad 2), ReLU, maxpool 2, conv5x5(16), ReLU, maxpool 2, FC 400-120-84-10 "
              "with ReLU (no BatchNorm)",
    "resnet20": "ResNet-20 (He et al. 2016, CIFAR variant, n=3): conv3x3(16) + 3 stages x 3 basic blocks "
                "of 16/32/64 channels, projection shortcuts at stage changes, global average pool, FC 10",
    "vgg_small": "VGG-style: conv3x3 32-32, maxpool, 64-64, maxpool, 128, maxpool (BN + ReLU after each conv), "
                 "FC 1152-256 (BN, ReLU, dropout 0.3), FC 256-10",
    "mobilenetv2_small": "MobileNetV2-style: conv3x3(16) stride-2 stem, torchvision InvertedResidual blocks "
                         "(t,c,n,s) = (1,16,1,1) (6,24,2,1) (6,32,2,2) (6,64,2,1) (6,96,1,1), conv1x1(256), "
                         "spatial mean, dropout 0.2, FC 10",
}


# ---------------------------------------------------------------- training
def augment(x, gen, pad_value=-MEAN / STD):
    """Random crop (pad 2 with pad_value) and horizontal flip, done on the batch tensor."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=pad_value)
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (smoke tests)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]

    model = MODELS[args.model]()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(x_train) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch:(step + 1) * args.batch]
            xb = augment(x_train[idx], gen)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item()
        print(f"epoch {epoch + 1}/{args.epochs} loss {total_loss / steps_per_epoch:.4f} "
              f"elapsed {time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start
    top1 = evaluate(model, x_test, y_test)
    print(f"{args.model}: test top-1 {top1:.2f}%", flush=True)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, f"{args.model}.onnx")
    tmp_path = onnx_path + ".tmp"
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), tmp_path, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    import onnx
    proto = onnx.load(tmp_path)
    for key, value in (("tern.mean", f"{MEAN}"), ("tern.std", f"{STD}"), ("tern.scale", "0.00392156862745098"),
                       ("tern.dataset", "fashion-mnist")):
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp_path)
    os.replace(tmp_path, onnx_path)

    card = {
        "name": args.model,
        "architecture": ARCH_TEXT[args.model],
        "parameters": sum(p.numel() for p in model.parameters()),
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test",
        "input": {"shape": [1, 28, 28], "scale": 1.0 / 255.0, "mean": [MEAN], "std": [STD]},
        "augmentation": "random crop 28 from 2-pixel padding, horizontal flip",
        "optimizer": f"SGD nesterov momentum 0.9, weight decay 5e-4, one-cycle lr max {args.lr}, "
                     f"label smoothing 0.05",
        "epochs": args.epochs,
        "batch": args.batch,
        "seed": args.seed,
        "pytorch_test_top1": round(top1, 2),
        "training_seconds": round(train_seconds),
        "training_threads": args.threads,
        "torch_version": torch.__version__,
        "onnx_opset": 13,
        "command": " ".join(["/usr/bin/python3", "scripts/train_reference.py"] + sys.argv[1:]),
    }
    with open(os.path.join(args.out, f"{args.model}.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path}")


if __name__ == "__main__":
    main()

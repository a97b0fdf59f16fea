#!/usr/bin/env python3
"""PyTorch eager peer for `make bench`: the same generator as models/src/nets (same module
paths, so the shipped safetensors load by name), timed per image in the same way as the tch
bench (models/benches/inference.rs), on the same inputs.

  pytorch_eager.py MANIFEST [--rows R --cols C] [--paper] [--iters N] [--device cpu|cuda]
                   [--batch B] [--dtype f32|bf16] [--compile] [--check INPUT.f32 OUTPUT.f32]

--dtype bf16 runs the generator under torch.autocast(bfloat16); --compile times
torch.compile(mode="max-autotune") of it (the GPU bench's fastest peer).

--check compares this implementation's output with vcnode's on a fixed input (raw float32
files), so the peer is known to run the same network, not a look-alike.
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x):
    return F.leaky_relu(x, 0.2)


class ScpaBlock(nn.Module):
    def __init__(self, nf):
        super().__init__()
        gw = max(nf // 2, 1)
        self.conv1_a = nn.Conv2d(nf, gw, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, gw, 1, bias=False)
        self.k1 = nn.Conv2d(gw, gw, 3, padding=1, bias=False)
        self.k2 = nn.Conv2d(gw, gw, 1)
        self.k3 = nn.Conv2d(gw, gw, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(gw, gw, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(2 * gw, nf, 1, bias=False)

    def forward(self, x):
        a = self.k1(lrelu(self.conv1_a(x)))
        b = lrelu(self.conv1_b(x))
        b = self.k4(self.k3(b) * torch.sigmoid(self.k2(b)))
        return self.conv3(torch.cat([lrelu(a), lrelu(b)], 1)) + x


class Stage(nn.Module):
    def __init__(self, c_in, c_out, stride, scpa, norm):
        super().__init__()
        batch = norm == "batch"
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(c_out) if batch else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(c_out) if batch else nn.Identity()
        self.scpa = ScpaBlock(c_out) if scpa else None

    def forward(self, x):
        h = lrelu(self.norm2(self.conv2(lrelu(self.norm(self.conv(x))))))
        return self.scpa(h) if self.scpa is not None else h


class Generator(nn.Module):
    def __init__(self, channels, scpa, output, norm="none"):
        super().__init__()
        ch = channels
        self.encoder = nn.ModuleList(
            Stage(1 if i == 0 else ch[i - 1], c, 1 if i == 0 else 2, scpa, norm) for i, c in enumerate(ch)
        )
        self.decoder = nn.ModuleDict()
        for i in reversed(range(len(ch) - 1)):
            self.decoder[f"up{i}"] = nn.Conv2d(ch[i + 1], ch[i], 3, padding=1)
            self.decoder[str(i)] = Stage(2 * ch[i], ch[i], 1, scpa, norm)
        self.head = nn.Conv2d(ch[0], 1, 1)
        self.levels = len(ch)
        self.output = output

    def forward(self, x):
        skips = []
        h = x
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        skips.pop()
        for i in reversed(range(self.levels - 1)):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="bilinear", align_corners=False)
            h = lrelu(self.decoder[f"up{i}"](h))
            h = self.decoder[str(i)](torch.cat([h, skip], 1))
        logits = self.head(h)
        return torch.sigmoid(logits) if self.output == "sigmoid" else torch.tanh(logits)


def load(manifest_path):
    from safetensors.torch import load_file

    m = json.load(open(manifest_path))
    g = m["generator"]
    net = Generator(g["channels"], g["scpa"], g["output"], g.get("norm", "none"))
    weights = load_file(os.path.join(os.path.dirname(manifest_path), m["weights"]["file"]))
    state = {k.removeprefix("generator."): v.float() for k, v in weights.items() if k.startswith("generator.")}
    # tch keeps no num_batches_tracked; it only matters for momentum=None, which is not used.
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"weights do not match the network: missing {missing}, unexpected {unexpected}")
    return net, m


def time_per_image(f, iters, sync):
    f()  # warm-up, as the tch bench does
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        f()
    sync()
    return (time.perf_counter() - t) * 1000.0 / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--cols", type=int)
    ap.add_argument("--paper", action="store_true", help="the paper's widths 32..256, random weights")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--check", nargs=2, metavar=("INPUT", "OUTPUT"))
    a = ap.parse_args()

    torch.manual_seed(0)
    net, m = load(a.manifest)
    if a.paper:
        net = Generator([32, 64, 128, 256, 256], True, "sigmoid", "batch")
    rows, cols = a.rows or m["input"]["rows"], a.cols or m["input"]["cols"]
    dev = torch.device(a.device)
    net = net.to(dev).eval()

    if a.check:
        import numpy as np

        x = torch.from_numpy(np.fromfile(a.check[0], dtype="<f4")).reshape(1, 1, rows, cols)
        want = torch.from_numpy(np.fromfile(a.check[1], dtype="<f4")).reshape(1, 1, rows, cols)
        with torch.no_grad():
            got = net(x.to(dev)).cpu()
        diff = (got - want).abs().max().item()
        print(f"max |PyTorch - vcnode| = {diff:.2e}")
        raise SystemExit(0 if diff < 1e-4 else 1)

    x = torch.rand(a.batch, 1, rows, cols, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    f = torch.compile(net, mode="max-autotune") if a.compile else net
    bf16 = a.dtype == "bf16"

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return f(x)

    with torch.no_grad():
        if a.compile:
            for _ in range(3):  # compilation and autotuning happen here, not in the timing
                step()
        ms = time_per_image(step, a.iters, sync) / a.batch
    how = ("torch.compile" if a.compile else "eager") + (" bf16" if bf16 else "")
    print(
        f"PyTorch {torch.__version__} {how} {rows}x{cols} batch {a.batch} on {a.device} "
        f"({torch.get_num_threads()} threads): {ms:.3f} ms/image"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes tests/fixtures/step.bin: one SGD training step of `regcnn` and `vgg` in PyTorch;
tests/fixtures/multistep.bin: MULTI_STEPS SGD steps of a small conv/BN/pool network over
different batches (the loss of every step and the parameters after the last), so a bug that
only shows over many steps (optimizer state, running statistics, the step counter) is seen;
and tests/fixtures/multistep_adam.bin: ADAM_STEPS torch.optim.Adam steps of the same network
(the presets mlp, cnn1 and cnn2 train with Adam: its moments and bias corrections over many
steps).

For each model, on a fixed batch of 8 images with fixed weights and dropout off (p = 0), the
file holds the input batch, the logits, the mean cross-entropy loss, every parameter gradient,
and the parameters and batch-norm running statistics after one torch.optim.SGD step
(lr 0.05, momentum 0.9, weight_decay 1e-3). tests/fixture.rs replays the same step on the GPU
and compares. CI needs no Python: the file is committed; this script documents how it was made.

The initial weights are not stored: both sides compute them from an integer hash
(`fixed_weights` here, `fixed_weights` in tests/fixture.rs), exactly, in float64 then float32.
Tensors over 50,000 elements (vgg's first linear layer, its larger convolutions) are stored
as every k-th element (k = ceil(n / 20000)), named "...@k", to keep the file near 1 MB.

The multi-step batches are not stored either: pixels and labels come from the same hash
(`multistep_batch` here and in tests/fixture.rs).

Run: python3 -m venv /tmp/t && /tmp/t/bin/pip install torch numpy && /tmp/t/bin/python tools/make_fixture.py

Format (little endian): magic b"WFMNFIX1", u32 version (1), u32 tensor count, then per tensor:
u32 name length, name (utf-8), u32 rank, u32 dims[rank], f32 data[prod(dims)].
"""
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from parity import build  # the spec -> nn.Sequential translation, shared

BATCH = 8
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 1e-3

# The presets' layer lists with dropout probabilities set to 0 (src/model/mod.rs).
SPECS = {
    "regcnn": "conv(32,3) bn dropout(0) relu maxpool(2) conv(64,3) bn dropout(0) relu maxpool(2) "
              "flatten linear(128) relu linear(10)",
    "vgg": "conv(64,3,1,1) relu bn conv(64,3,1,1) relu bn maxpool(2) dropout(0) "
           "conv(128,3,1,1) relu dropout(0) bn conv(128,3,1,1) relu bn maxpool(2) dropout(0) "
           "flatten linear(640) relu linear(10)",
}


def fixed_values(n, salt):
    """u in [0, 1) from an integer hash of (index, salt): exact in float64 on every platform."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(salt) * np.uint64(40503)) % np.uint64(2**32)
    return h.astype(np.float64) / 2.0**32


def fixed_weights(model):
    """Deterministic parameters: U(-1, 1)/sqrt(fan_in) for weights and biases of conv and
    linear layers; gamma = 1 + 0.1 U(-1, 1), beta = 0.1 U(-1, 1) for batch norm."""
    with torch.no_grad():
        for idx, layer in enumerate(model):
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                for j, t in enumerate([layer.weight, layer.bias]):
                    u = fixed_values(t.numel(), 2 * idx + j)
                    t.copy_(torch.from_numpy(((2 * u - 1) / np.sqrt(fan_in)).astype(np.float32)).reshape(t.shape))
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                u = fixed_values(layer.weight.numel(), 2 * idx)
                layer.weight.copy_(torch.from_numpy((1 + 0.1 * (2 * u - 1)).astype(np.float32)))
                u = fixed_values(layer.bias.numel(), 2 * idx + 1)
                layer.bias.copy_(torch.from_numpy((0.1 * (2 * u - 1)).astype(np.float32)))


MULTI_SPEC = ("conv(8,3) bn relu maxpool(2) conv(16,3) bn relu maxpool(2) flatten linear(32) relu "
              "linear(10)")
MULTI_STEPS, MULTI_BATCH, MULTI_LR = 24, 16, 0.02


def multistep_batch(step):
    """Step `step`'s inputs (normalised as the trainer does) and labels, from the hash."""
    u = fixed_values(MULTI_BATCH * 784, 1000 + step)
    pixels = torch.from_numpy((u * u * 255).astype(np.float32)).reshape(MULTI_BATCH, 1, 28, 28)
    labels = torch.from_numpy((fixed_values(MULTI_BATCH, 5000 + step) * 10).astype(np.int64))
    return (pixels / 255 - 0.5) / 0.5, labels


def write(out_path, tensors):
    with open(out_path, "wb") as f:
        f.write(b"WFMNFIX1")
        f.write(struct.pack("<II", 1, len(tensors)))
        for name, arr in tensors:
            b = name.encode()
            f.write(struct.pack("<I", len(b)) + b)
            f.write(struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
            f.write(arr.astype("<f4").tobytes())
    print(f"wrote {out_path}: {len(tensors)} tensors, torch {torch.__version__}")


ADAM_STEPS, ADAM_LR = 60, 1e-3


def multistep(out_path, adam=False):
    model = build(MULTI_SPEC)
    fixed_weights(model)
    model.train()
    if adam:
        opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=MULTI_LR, momentum=MOMENTUM,
                              weight_decay=WEIGHT_DECAY)
    losses = []
    for step in range(ADAM_STEPS if adam else MULTI_STEPS):
        x, labels = multistep_batch(step)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tensors = [("losses", np.array(losses, dtype=np.float32))]
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            tensors.append((f"after.{k}", v.detach().numpy().astype(np.float32)))
    write(out_path, tensors)


def main(out_path):
    tensors = []

    def add(name, t):
        arr = t.detach().cpu().numpy().astype(np.float32).reshape(-1) if t.numel() > 50000 else t.detach().cpu().numpy().astype(np.float32)
        if t.numel() > 50000:
            k = -(-t.numel() // 20000)
            arr = arr[::k]
            name = f"{name}@{k}"
        tensors.append((name, np.ascontiguousarray(arr)))

    for seed, (model_name, spec) in enumerate(SPECS.items()):
        model = build(spec)
        fixed_weights(model)
        model.train()
        # Images normalised as the trainer does ((v/255 - 0.5) / 0.5). Continuous values: flat
        # regions would make max-pooling windows tie, and which tied element receives the
        # gradient then depends on last-bit rounding in either implementation.
        g = torch.Generator().manual_seed(99 + seed)
        pixels = torch.rand(BATCH, 1, 28, 28, generator=g) ** 2 * 255
        x = (pixels / 255 - 0.5) / 0.5
        labels = torch.arange(BATCH) % 10
        add(f"{model_name}.input", x)
        add(f"{model_name}.labels", labels.float())
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        add(f"{model_name}.logits", logits)
        add(f"{model_name}.loss", loss.reshape(1))
        for k, p in model.named_parameters():
            add(f"{model_name}.grad.{k}", p.grad)
        opt.step()
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                add(f"{model_name}.after.{k}", v)

    write(out_path, tensors)


if __name__ == "__main__":
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    main(sys.argv[1] if len(sys.argv) > 1 else str(fixtures / "step.bin"))
    multistep(sys.argv[2] if len(sys.argv) > 2 else str(fixtures / "multistep.bin"))
    multistep(sys.argv[3] if len(sys.argv) > 3 else str(fixtures / "multistep_adam.bin"), adam=True)

#!/usr/bin/env python3
"""Checks a wgpu-fmnist checkpoint against PyTorch: builds the nn.Sequential its `spec`
metadata describes, loads the tensors with load_state_dict(strict=True), evaluates the test
set, and saves the state dict back with safetensors (for `wgpu-fmnist eval --checkpoint`).

Run: /tmp/t/bin/python tools/pytorch_compat.py runs/regcnn/best.safetensors [DATA_DIR] [OUT.safetensors]
"""
import gzip
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from make_fixture import build  # noqa: E402


def idx(path):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ckpt = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    with safe_open(ckpt, "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("optim.")}
    model = build(meta["spec"])
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(idx(f"{data}/t10k-images-idx3-ubyte.gz").astype(np.float32))
    y = torch.from_numpy(idx(f"{data}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x = (x / 255 - float(meta["input_mean"])) / float(meta["input_std"])
    with torch.no_grad():
        logits = model(x.unsqueeze(1))
    acc = (logits.argmax(1) == y).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    print(f"PyTorch {torch.__version__}: load_state_dict(strict=True) ok; test accuracy {acc:.4f}, loss {loss:.4f}")
    if len(sys.argv) > 3:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[3])
        print(f"wrote PyTorch state dict (no metadata) to {sys.argv[3]}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Training parity with PyTorch: the same preset, recipe and data, several seeds on each side.

For each seed, both sides train the preset from a fresh initialisation for STEPS steps on
Fashion-MNIST (the first STEPS * batch + VAL training images; VAL of them held out at random)
and report the running loss and accuracy over those steps, then the accuracy on the held-out
images and on the whole 10,000-image test set (the same images on both sides, so this column
carries no held-out sampling noise). wgpu-fmnist runs through its CLI (`train --epochs 1 --limit-train ...`, so its one
epoch is exactly STEPS steps), PyTorch (CPU) with the identical layer list, init distribution
(PyTorch's defaults, which wgpu-fmnist reproduces), input normalisation and optimizer
settings, all read back from the run's resolved config.toml. Then each side's mean and spread.

Not needed by CI. Run:
    pip install torch==2.15.0 safetensors
    cargo build --release
    python3 tools/parity.py --model vgg --steps 300 --seeds 5

A side whose mean lies outside the other's mean +- 2 standard errors of the difference is
flagged; with few seeds treat that as a reason to look, not a verdict.

--paired removes the two largest sources of spread: for each seed, PyTorch draws the initial
weights, wgpu-fmnist starts from them (`train --init`), and PyTorch follows wgpu-fmnist's data
order (its SplitMix64 shuffles, reproduced here). Then the per-seed difference measures the
implementations alone (plus dropout masks, which still differ), with a much smaller error.

--start CHECKPOINT pairs the runs the same way from a trained checkpoint of ours (weights and
batch-norm running statistics; each side's optimizer starts fresh), e.g. vgg after an epoch:
past the chaotic first hundred steps, a systematic difference that only shows late in a run
is not drowned by trajectories that part at random.
"""
import argparse
import gzip
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def read_idx(path):
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def load_split(data_dir, prefix):
    d = Path(data_dir)
    pick = lambda stem: next(p for p in (d / stem, d / (stem + ".gz")) if p.exists())
    return read_idx(pick(f"{prefix}-images-idx3-ubyte")), read_idx(pick(f"{prefix}-labels-idx1-ubyte"))


def build(spec):
    """nn.Sequential for a wgpu-fmnist layer spec (the canonical text in config.toml)."""
    layers, c, h, w, flat = [], 1, 28, 28, None
    for tok in spec.split():
        name, _, args = tok.partition("(")
        a = [float(x) for x in args.rstrip(")").split(",")] if args else []
        if name == "conv":
            out, k = int(a[0]), int(a[1])
            stride = int(a[2]) if len(a) > 2 else 1
            pad = int(a[3]) if len(a) > 3 else 0
            layers.append(nn.Conv2d(c, out, k, stride, pad))
            c, h, w = out, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        elif name == "bn":
            layers.append(nn.BatchNorm1d(flat) if flat else nn.BatchNorm2d(c))
        elif name == "relu":
            layers.append(nn.ReLU())
        elif name == "maxpool":
            k = int(a[0])
            s = int(a[1]) if len(a) > 1 else k
            layers.append(nn.MaxPool2d(k, s))
            h, w = (h - k) // s + 1, (w - k) // s + 1
        elif name == "dropout":
            layers.append(nn.Dropout(a[0]))
        elif name == "flatten":
            layers.append(nn.Flatten())
            flat = c * h * w
        elif name == "linear":
            layers.append(nn.Linear(flat, int(a[0])))
            flat = int(a[0])
        else:
            raise SystemExit(f"unknown layer {tok}")
    return nn.Sequential(*layers)


def optimizer(cfg, params):
    kind = cfg["optimizer"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
               weight_decay=cfg["weight_decay"])


def accuracy(model, x, y):
    with torch.no_grad():
        return sum((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
                   for i in range(0, len(y), 500)) / len(y)


MASK64 = (1 << 64) - 1


class SplitMix64:
    """wgpu-fmnist's `Rng` (src/rng.rs), bit for bit: its shuffles give our data order."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = (self.next_u64() * (i + 1)) >> 64
            items[i], items[j] = items[j], items[i]


def our_uniforms(rng_state, count, bound):
    """`count` draws of Rng::uniform(-bound, bound) continuing from `rng_state`, vectorised
    (SplitMix64 is a counter: draw k mixes state + k * gamma). Returns (values, new state)."""
    import numpy as np
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(rng_state) + gamma * np.arange(1, count + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    unit = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    lo, hi = -float(bound), float(bound)
    values = (lo + (hi - lo) * unit).astype(np.float32)
    return values, (rng_state + count * 0x9E3779B97F4A7C15) & MASK64


def our_init(model, seed):
    """Loads wgpu-fmnist's initial weights for `seed` (ModelSpec::init_params: PyTorch's
    distribution from our SplitMix64 stream) into the nn.Sequential `model`."""
    import numpy as np
    state = (seed ^ 0x1A1EC0DE) & MASK64
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                bound = np.float32(1.0) / np.sqrt(np.float32(fan_in))
                for p in (layer.weight, layer.bias):
                    values, state = our_uniforms(state, p.numel(), bound)
                    p.copy_(torch.from_numpy(values).reshape(p.shape))
    return model


def our_order(n, val, seed, epoch=1):
    """The held-out images and epoch `epoch`'s training order of a wgpu-fmnist run
    (train::split_indices and Trainer::epoch)."""
    everything = list(range(n))
    SplitMix64(seed ^ 0x7A1DA7E5).shuffle(everything)
    held, train = sorted(everything[:val]), sorted(everything[val:])
    SplitMix64(seed * 0x9E3779B9 + epoch).shuffle(train)
    return torch.tensor(held), torch.tensor(train)


def train_step(model, opt, cfg, x, y):
    """One optimizer step on a batch (L1 as our --l1: l1 * sign(w) added to each gradient).
    Returns the logits and the loss, a tensor on the batch's device (no sync here)."""
    out = model(x)
    loss = F.cross_entropy(out, y, label_smoothing=cfg.get("label_smoothing", 0.0))
    opt.zero_grad()
    loss.backward()
    if cfg["l1"] > 0:
        for p in model.parameters():
            p.grad.add_(torch.sign(p.data), alpha=cfg["l1"])
    opt.step()
    return out, loss.detach()


def torch_run(cfg, images, labels, test, steps, val, seed, paired=None):
    """PyTorch's run. `paired` = (model, held, train order): start from those weights and
    follow that order (the --paired mode) instead of drawing both from torch's seed."""
    torch.manual_seed(seed)
    batch = cfg["batch_size"]
    n = steps * batch + val
    x = (images[:n].float() / 255.0 - cfg["input_mean"]) / cfg["input_std"]
    x, y = x.unsqueeze(1), labels[:n].long()
    if paired:
        model, held, train = paired
    else:
        order = torch.randperm(n)
        held, train = order[:val], order[val:]
        model = build(cfg["spec"])
        train = train[torch.randperm(len(train))]
    opt = optimizer(cfg, model.parameters())
    loss_sum = correct = seen = 0.0
    model.train()
    for s in range(steps):
        idx = train[s * batch:(s + 1) * batch]
        out, loss = train_step(model, opt, cfg, x[idx], y[idx])
        loss_sum += loss.item() * len(idx)
        correct += (out.argmax(1) == y[idx]).sum().item()
        seen += len(idx)
    model.eval()
    tx = ((test[0].float() / 255.0 - cfg["input_mean"]) / cfg["input_std"]).unsqueeze(1)
    return (loss_sum / seen, correct / seen, accuracy(model, x[held], y[held]),
            accuracy(model, tx, test[1].long()))


def ours_run(binary, model, steps, val, seed, data, extra, workdir, init=None):
    cfg = resolved_config(binary, model, extra, workdir)
    n = steps * cfg["batch_size"] + val
    name = f"seed{seed}"
    cmd = [binary, "train", "--model", model, "--epochs", "1", "--seed", str(seed),
           "--limit-train", str(n), "--val", str(val), "--json",
           "--out", str(workdir), "--name", name, "--data", str(data), *extra]
    if init:
        cmd += ["--init", str(init)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    epoch = next(l for l in lines if l["kind"] == "epoch")
    test = next(l for l in lines if l["kind"] == "summary")
    return (epoch["train_loss"], epoch["train_accuracy"], epoch["val_accuracy"],
            test["test_accuracy"])


def resolved_config(binary, model, extra, workdir):
    """The recipe as wgpu-fmnist resolves it: a short run writes its config.toml (of 4,096
    images: a run lowers a batch size larger than its training set, and stores that)."""
    probe = Path(workdir) / "probe"
    if not (probe / "config.toml").exists():
        subprocess.run([binary, "train", "--model", model, "--epochs", "1", "--limit-train",
                        "4096", "--val", "0", "--limit-test", "10", "--quiet", "--out",
                        str(workdir), "--name", "probe", *extra], check=True)
    return tomllib.loads((probe / "config.toml").read_text())


def summary(rows):
    cols = list(zip(*rows))
    return [(statistics.mean(c), statistics.stdev(c) if len(c) > 1 else 0.0) for c in cols]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per side (0..N-1)")
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--binary", default=str(ROOT / "target/release/wgpu-fmnist"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paired", nargs="?", const="torch", choices=("torch", "ours"),
                    help="per seed, both sides start from the same weights (drawn by torch, "
                         "or by wgpu-fmnist's init for that seed: `ours`) and follow "
                         "wgpu-fmnist's data order; differences are then per seed")
    ap.add_argument("--torch-only", action="store_true",
                    help="run only the PyTorch side (e.g. --paired ours: how PyTorch fares "
                         "from our seeds' weights and order)")
    ap.add_argument("--seed-list", help="comma-separated seeds instead of 0..N-1")
    ap.add_argument("--start", metavar="CHECKPOINT",
                    help="both sides start from this checkpoint of ours (`train --init` here, "
                         "load_state_dict(strict=True) in PyTorch) and follow our data order")
    ap.add_argument("extra", nargs="*", help="more train flags for both sides (after --)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    images, labels = load_split(a.data, "train")
    test = load_split(a.data, "t10k")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolved_config(a.binary, a.model, a.extra, tmp)
        print(f"{a.model}: {cfg['spec']}")
        print(f"{cfg['optimizer']} lr {cfg['lr']} momentum {cfg['momentum']} weight decay "
              f"{cfg['weight_decay']} batch {cfg['batch_size']}; {a.steps} steps, "
              f"{a.val} held out, seeds {a.seed_list or f'0..{a.seeds - 1}'}\n")
        print(f"{'seed':>4}  {'ours loss':>9} {'acc':>6} {'val':>6} {'test':>6}  "
              f"{'torch loss':>10} {'acc':>6} {'val':>6} {'test':>6}  {'s ours':>6} {'s torch':>7}")
        ours, theirs = [], []
        seeds = [int(x) for x in a.seed_list.split(",")] if a.seed_list else range(a.seeds)
        a.seeds = len(seeds)
        for seed in seeds:
            t0 = time.time()
            init = paired = None
            if a.start or a.paired:
                # The same starting weights on both sides (a checkpoint of ours, torch's
                # handed to us with --init, or ours rebuilt in Python) and our data order.
                torch.manual_seed(seed)
                model = build(cfg["spec"])
                if a.start:
                    model.load_state_dict({k: v for k, v in load_file(a.start).items()
                                           if not k.startswith("optim.")}, strict=True)
                    init = Path(a.start)
                elif a.paired == "ours":
                    our_init(model, seed)
                else:
                    init = Path(tmp) / f"init{seed}.safetensors"
                    save_file({k: v.contiguous() for k, v in model.state_dict().items()
                               if not k.endswith("num_batches_tracked")}, str(init))
                n = a.steps * cfg["batch_size"] + a.val
                paired = (model, *our_order(n, a.val, seed))
            if a.torch_only:
                o = (float("nan"),) * 4
            else:
                o = ours_run(a.binary, a.model, a.steps, a.val, seed, a.data, a.extra, tmp,
                             init)
            t1 = time.time()
            t = torch_run(cfg, images, labels, test, a.steps, a.val, seed, paired)
            t2 = time.time()
            ours.append(o)
            theirs.append(t)
            print(f"{seed:>4}  {o[0]:>9.4f} {o[1] * 100:>5.1f}% {o[2] * 100:>5.1f}% "
                  f"{o[3] * 100:>5.2f}%  {t[0]:>10.4f} {t[1] * 100:>5.1f}% {t[2] * 100:>5.1f}% "
                  f"{t[3] * 100:>5.2f}%  "
                  f"{t1 - t0:>6.0f} {t2 - t1:>7.0f}", flush=True)
        so, st = summary(ours), summary(theirs)
        print()
        for label, s in (("ours", so), ("torch", st)):
            print(f"{label:>5} mean +- sd: loss {s[0][0]:.4f} +- {s[0][1]:.4f}, "
                  f"acc {s[1][0] * 100:.2f} +- {s[1][1] * 100:.2f} %, "
                  f"val {s[2][0] * 100:.2f} +- {s[2][1] * 100:.2f} %, "
                  f"test {s[3][0] * 100:.2f} +- {s[3][1] * 100:.2f} %")
        n = a.seeds
        for i, what in enumerate(("running loss", "running accuracy", "val accuracy",
                                  "test accuracy")):
            if a.paired or a.start:
                # Same weights and order per seed: the spread of the per-seed differences
                # is what remains (implementation and dropout noise).
                d = [o[i] - t[i] for o, t in zip(ours, theirs)]
                se = statistics.stdev(d) / math.sqrt(n) if n > 1 else float("inf")
            else:
                se = math.sqrt((so[i][1] ** 2 + st[i][1] ** 2) / n) if n > 1 else float("inf")
            diff = so[i][0] - st[i][0]
            # Judged against Student's t for the seeds at hand: with 3 seeds 2 s.e. is a
            # 72 % interval, not a 95 % one, and flags chance differences.
            df = n - 1 if a.paired or a.start else 2 * (n - 1)
            half = t_975(df) * se
            flag = "ok" if abs(diff) <= half else "DIFFERS"
            print(f"{what:>16}: ours - torch = {diff:+.4f} (2 s.e. {2 * se:.4f}; "
                  f"95 % interval +-{half:.4f}, {df} d.f.) {flag}")


def t_975(df):
    """Student's t 97.5 % quantile (two-sided 95 %) for df degrees of freedom."""
    table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
             2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086]
    if df < 1:
        return float("inf")
    return table[df - 1] if df <= len(table) else 1.96 + 2.4 / df


if __name__ == "__main__":
    sys.exit(main())

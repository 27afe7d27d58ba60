#!/usr/bin/env python3
"""PyTorch's figure for a preset's full recipe: what the README's preset table puts next to
ours and the seed's.

Trains the preset exactly as `wgpu-fmnist train --model X` would (the resolved config.toml
of a probe run: layers, PyTorch's init, optimizer, batch, epochs, normalisation, the same
55,000 / 5,000 split and per-epoch shuffles as our seed, via tools/parity.py), on CPU, and
prints validation and test accuracy and the epoch's training time after every epoch as JSON
lines, then the mean and spread over the seeds. `--device cuda` keeps the data set on the GPU
and sums the loss there (one sync per epoch), for a side-by-side on the same GPU.

The `fast` recipe's ingredients are reproduced too: `--schedule onecycle(...)` (OneCycleLR,
no momentum cycling, as ours), `--label-smoothing`, `--augment` with `flip` and `shift(N)`
(per image, on the device), `--ema DECAY` (AveragedModel with buffers, evaluated and
timed), `--tta flip` and `--target-accuracy` (stop after the epoch whose validation reaches
it). Each run's last line gives the training seconds at which validation first reached
90..94 %, as our summary's `seconds_to_val_accuracy`. Other schedules and augmentations are
refused rather than silently dropped. Not needed by CI. Run:
    pip install torch==2.15.0 safetensors numpy
    cargo build --release
    python3 tools/torch_reference.py --model mlp --epochs 10 --seeds 3
    python3 tools/torch_reference.py --model fast --epochs 15 --seeds 1
"""
import argparse
import copy
import re
import json
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import parity


def schedule(cfg, opt, steps):
    """Our `--schedule` as a torch scheduler stepped per step (None: constant)."""
    text = cfg.get("schedule", "constant")
    if text == "constant":
        return None
    m = re.fullmatch(r"onecycle\(pct=([^,]+),div=([^,]+),final_div=([^)]+)\)", text)
    if not m:
        raise SystemExit(f"--schedule {text}: not reproduced here (constant or onecycle)")
    pct, div, final_div = (float(v) for v in m.groups())
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], total_steps=steps, pct_start=pct, div_factor=div,
        final_div_factor=final_div, anneal_strategy="cos", cycle_momentum=False)


def augmenter(cfg):
    """Our `--augment` (flip and shift only) as a function of a [0, 1] batch: per-image flips
    and RandomCrop(28, padding=N) translations with zero fill, before normalisation."""
    text = cfg.get("augment", "")
    flip_p, shift = (0.5 if cfg.get("flip") else 0.0), cfg.get("shift", 0)
    for item in text.split():
        if m := re.fullmatch(r"flip\(p=([^)]+)\)", item):
            flip_p = float(m.group(1))
        elif m := re.fullmatch(r"shift\((\d+)\)", item):
            shift = int(m.group(1))
        else:
            raise SystemExit(f"--augment item {item}: not reproduced here (flip, shift)")
    if flip_p == 0 and shift == 0:
        return None

    def apply(x):
        b, dev = len(x), x.device
        if flip_p > 0:
            flip = torch.rand(b, device=dev) < flip_p
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if shift > 0:
            pad = F.pad(x, (shift,) * 4)
            dy = torch.randint(0, 2 * shift + 1, (b, 1, 1), device=dev)
            dx = torch.randint(0, 2 * shift + 1, (b, 1, 1), device=dev)
            rows = torch.arange(28, device=dev)[None, :, None] + dy
            cols = torch.arange(28, device=dev)[None, None, :] + dx
            x = pad[torch.arange(b, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
        return x
    return apply


def accuracy(model, x, y, tta):
    """Test accuracy; `--tta flip` averages the logits of each image and its mirror."""
    with torch.no_grad():
        right = 0
        for i in range(0, len(y), 500):
            out = model(x[i:i + 500])
            if tta == "flip":
                out = out + model(x[i:i + 500].flip(3))
            right += (out.argmax(1) == y[i:i + 500]).sum().item()
        return right / len(y)


def run(cfg, images, labels, test, seed, epochs, init, device):
    torch.manual_seed(seed)
    model = parity.build(cfg["spec"])
    if init == "ours":
        parity.our_init(model, seed)
    model.to(device)
    n = len(labels)
    held, _ = parity.our_order(n, cfg["val"], seed)
    # The whole data set on the device in [0, 1], as ours keeps it: a step gathers its batch
    # there, augments it and normalises it.
    mean, std = cfg["input_mean"], cfg["input_std"]
    x = (images.float() / 255.0).unsqueeze(1).to(device)
    y = labels.long().to(device)
    tx = ((test[0].float() / 255.0 - mean) / std).unsqueeze(1).to(device)
    ty = test[1].long().to(device)
    held = held.to(device)
    vx, vy = (x[held] - mean) / std, y[held]
    opt = parity.optimizer(cfg, model.parameters())
    batch = cfg["batch_size"]
    per_epoch = -(-(n - len(held)) // batch)
    sched = schedule(cfg, opt, per_epoch * epochs)
    augment = augmenter(cfg)
    tta = cfg.get("tta", "none")
    ema = None
    if cfg.get("ema", 0.0) > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg["ema"]),
                            use_buffers=True)
    target = cfg.get("target_accuracy")
    history, crossed, train_total = [], {}, 0.0
    for epoch in range(1, epochs + 1):
        _, order = parity.our_order(n, cfg["val"], seed, epoch)
        order = order.to(device)
        sync(device)
        t0 = time.time()
        model.train()
        # Summed on the device: no per-step readback (as ours), one sync per epoch.
        loss_sum = torch.zeros((), device=device)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            xb = x[idx]
            if augment:
                xb = augment(xb)
            _, loss = parity.train_step(model, opt, cfg, (xb - mean) / std, y[idx])
            if sched:
                sched.step()
            if ema:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(idx)
        sync(device)
        train_seconds = time.time() - t0
        train_total += train_seconds
        judge = ema.module if ema else model
        judge.eval()
        val = accuracy(judge, vx, vy, tta) if len(held) else None
        for level in range(90, 95):
            if val is not None and val * 100 >= level and str(level) not in crossed:
                crossed[str(level)] = round(train_total, 2)
        rec = {"seed": seed, "epoch": epoch, "train_loss": loss_sum.item() / len(order),
               "val_accuracy": val, "test_accuracy": accuracy(judge, tx, ty, tta),
               "train_seconds": train_seconds, "train_seconds_total": train_total,
               "train_images_per_second": len(order) / train_seconds,
               "seconds": time.time() - t0, "seconds_to_val_accuracy": crossed}
        print(json.dumps(rec), flush=True)
        history.append(rec)
        if target and val is not None and val * 100 >= target:
            break
    return history


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--epochs", type=int, required=True, help="the preset's, e.g. mlp 10")
    ap.add_argument("--val", type=int, default=5000, help="held out, as train's default")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-list", help="comma-separated seeds instead of 0..N-1")
    ap.add_argument("--init", choices=("torch", "ours"), default="torch",
                    help="initial weights from torch's seed or from our init for the seed")
    ap.add_argument("--binary", default=str(parity.ROOT / "target/release/wgpu-fmnist"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="torch device: cpu, cuda, cuda:1 (the data set is kept there)")
    ap.add_argument("extra", nargs="*", help="more train flags (after --)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {a.device}: this torch has no CUDA device")
        # fp32 throughout, as ours: no TF32 in convolutions or matrix products.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"# device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}",
              flush=True)
    images, labels = parity.load_split(a.data, "train")
    test = parity.load_split(a.data, "t10k")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parity.resolved_config(a.binary, a.model, a.extra, tmp)
    epochs = a.epochs
    cfg["val"] = a.val
    print(f"# {a.model}: {cfg['spec']}; {cfg['optimizer']} lr {cfg['lr']}, batch "
          f"{cfg['batch_size']}, {epochs} epochs, {cfg['val']} held out", flush=True)
    seeds = [int(x) for x in a.seed_list.split(",")] if a.seed_list else range(a.seeds)
    finals = [run(cfg, images, labels, test, seed, epochs, a.init, device)[-1]["test_accuracy"]
              for seed in seeds]
    sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print(f"# test accuracy after {epochs} epochs over seeds {', '.join(map(str, seeds))}: "
          f"{statistics.mean(finals) * 100:.2f} +- {sd * 100:.2f} % "
          f"({', '.join(f'{f * 100:.2f}' for f in finals)})")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PyTorch's figure for a preset's full recipe: what the README's preset table puts next to
ours and the seed's.

Trains the preset exactly as `wgpu-fmnist train --model X` would (the resolved config.toml
of a probe run: layers, PyTorch's init, optimizer, batch, epochs, normalisation, the same
55,000 / 5,000 split and per-epoch shuffles as our seed, via tools/parity.py), on CPU, and
prints validation and test accuracy and the epoch's training time after every epoch as JSON
lines, then the mean and spread over the seeds. `--device cuda` keeps the data set on the GPU
and sums the loss there (one sync per epoch), for a side-by-side on the same GPU. Augmentation and schedules are not reproduced (the presets use
neither). Not needed by CI. Run:
    pip install torch==2.15.0 safetensors numpy
    cargo build --release
    python3 tools/torch_reference.py --model mlp --epochs 10 --seeds 3
"""
import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

import parity


def run(cfg, images, labels, test, seed, epochs, init, device):
    torch.manual_seed(seed)
    model = parity.build(cfg["spec"])
    if init == "ours":
        parity.our_init(model, seed)
    model.to(device)
    n = len(labels)
    held, _ = parity.our_order(n, cfg["val"], seed)
    # The whole data set on the device, as ours keeps it: a step gathers its batch there.
    x = ((images.float() / 255.0 - cfg["input_mean"]) / cfg["input_std"]).unsqueeze(1).to(device)
    y = labels.long().to(device)
    tx = ((test[0].float() / 255.0 - cfg["input_mean"]) / cfg["input_std"]).unsqueeze(1).to(device)
    ty = test[1].long().to(device)
    held = held.to(device)
    opt = parity.optimizer(cfg, model.parameters())
    batch = cfg["batch_size"]
    history = []
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
            _, loss = parity.train_step(model, opt, cfg, x[idx], y[idx])
            loss_sum += loss * len(idx)
        sync(device)
        train_seconds = time.time() - t0
        model.eval()
        rec = {"seed": seed, "epoch": epoch, "train_loss": loss_sum.item() / len(order),
               "val_accuracy": parity.accuracy(model, x[held], y[held]) if len(held) else None,
               "test_accuracy": parity.accuracy(model, tx, ty),
               "train_seconds": train_seconds,
               "train_images_per_second": len(order) / train_seconds,
               "seconds": time.time() - t0}
        print(json.dumps(rec), flush=True)
        history.append(rec)
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
    finals = [run(cfg, images, labels, test, seed, epochs, a.init, device)[-1]["test_accuracy"]
              for seed in range(a.seeds)]
    sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print(f"# test accuracy after {epochs} epochs over seeds 0..{a.seeds - 1}: "
          f"{statistics.mean(finals) * 100:.2f} +- {sd * 100:.2f} % "
          f"({', '.join(f'{f * 100:.2f}' for f in finals)})")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Training and inference images/s, wgpu-fmnist next to PyTorch on the same CPU, one preset
after the other in one run: the side-by-side table of issue 14.

For each preset, `wgpu-fmnist bench --model X --json` (its end-to-end figures: training steps
recorded in bulk, then inference at the same batch size), then PyTorch (CPU, `--threads`
threads) with the identical layers and optimizer (read from the resolved config.toml, as
tools/parity.py does), timed the same way: a warm-up, then whole steps (forward, loss,
backward, optimizer) for SECONDS, and eval-mode forwards under no_grad for SECONDS / 2. Both
sides use random inputs of the data's shape (speed does not depend on the values). Ratios are
ours / PyTorch: above 1 we are faster.

Not needed by CI. Run (with nothing else busy on the machine):
    pip install torch==2.15.0 safetensors
    cargo build --release
    python3 tools/speed_table.py                       # all presets at their batch sizes
    python3 tools/speed_table.py --preset mlp --preset vgg --seconds 5
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import parity

PRESETS = ["mlp", "regcnn", "cnn1", "cnn2", "vgg"]


def ours(binary, preset, seconds, batch):
    cmd = [binary, "bench", "--model", preset, "--json", "--seconds", str(seconds)]
    if batch:
        cmd += ["--batch-size", str(batch)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    summary = json.loads(r.stdout.splitlines()[-1])
    busy = summary.get("others_cpu_share")
    if busy is not None and busy > 0.1:
        print(f"# warning: other processes took {busy:.0%} of the CPUs while {preset} was "
              "timed: its figures are not reliable", file=sys.stderr, flush=True)
    return (summary["batch_size"], summary["train_images_per_second"],
            summary["infer_images_per_second"], summary["adapter"])


def rate(step, batch, seconds):
    """Images/s of `step()` over at least `seconds` after a warm-up of 3 calls."""
    for _ in range(3):
        step()
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return n * batch / elapsed


def torch_rates(cfg, batch, seconds):
    torch.manual_seed(0)
    model = parity.build(cfg["spec"])
    opt = parity.optimizer(cfg, model.parameters())
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def train():
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x).argmax(1)

    model.train()
    t = rate(train, batch, seconds)
    model.eval()
    i = rate(infer, batch, seconds / 2)
    return t, i


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", action="append", help="preset(s) to time (default: all five)")
    ap.add_argument("--batch-size", type=int, help="instead of each preset's own")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's threads (the cores)")
    ap.add_argument("--binary", default=str(parity.ROOT / "target/release/wgpu-fmnist"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for preset in a.preset or PRESETS:
        batch, our_t, our_i, adapter = ours(a.binary, preset, a.seconds, a.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            extra = ["--batch-size", str(batch)]
            cfg = parity.resolved_config(a.binary, preset, extra, tmp)
        torch_t, torch_i = torch_rates(cfg, batch, a.seconds)
        rows.append((preset, batch, our_t, torch_t, our_i, torch_i))
        print(f"# {preset} ({batch}): ours {our_t:,.0f} / {our_i:,.0f}, "
              f"torch {torch_t:,.0f} / {torch_i:,.0f} images/s (train / inference)",
              file=sys.stderr, flush=True)
    print(f"wgpu-fmnist on {adapter}; PyTorch {torch.__version__} on the CPU, "
          f"{a.threads} threads; training and inference images/s at the training batch size\n")
    print("| preset (batch) | train: ours | PyTorch | ratio | inference: ours | PyTorch | ratio |")
    print("|---|---|---|---|---|---|---|")
    for preset, batch, our_t, torch_t, our_i, torch_i in rows:
        print(f"| {preset} ({batch}) | {our_t:,.0f} | {torch_t:,.0f} | {our_t / torch_t:.2f} "
              f"| {our_i:,.0f} | {torch_i:,.0f} | {our_i / torch_i:.2f} |")


if __name__ == "__main__":
    sys.exit(main())

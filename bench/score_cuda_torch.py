#!/usr/bin/env python3
"""The peer of bench_score_cuda: torch.nn.LSTM + nn.Linear on CUDA (cuDNN), FP32, TF32 off.

Same shapes: windows of T = 64 steps of F = 8 features, the first 63 through a one-layer
LSTM of H = 64, the head on the last hidden state. Three ways, best of N after warm-up, each
timed to torch.cuda.synchronize():

  device    inputs already on the GPU, outputs left there (cuDNN alone)
  pageable  windows in pageable host memory, the 63 steps copied in, outputs copied back
            (what the scorer's call does)
  pinned    the same from pinned host memory, already cut to 63 steps

Run where python3 has torch with CUDA (the GPU machine):
  python3 bench/score_cuda_torch.py [--runs N] [--layers L] [--hidden H] [B ...]
"""

import argparse
import sys
import time

import torch

T, F = 64, 8


def best_of(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def flops_per_window(layers, hidden, steps):
    f, inp = 0, F
    for _ in range(layers):
        f += 2 * (inp * 4 * hidden + hidden * 4 * hidden) * steps
        inp = hidden
    return f + 2 * hidden * F


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--gate-mib", type=int, help="bench_score_cuda's; ignored here")
    ap.add_argument("batches", type=int, nargs="*", default=[1024, 16384, 131072])
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA device")
        return 77

    # FP32 on both paths, as the C backend (and the CPU parity tolerance) needs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(F, a.hidden, num_layers=a.layers, batch_first=True).to(dev).eval()
    head = torch.nn.Linear(a.hidden, F).to(dev).eval()
    steps = T - 1
    fpw = flops_per_window(a.layers, a.hidden, steps)

    def net(x):
        y, _ = lstm(x)
        return head(y[:, -1])

    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(dev)}; TF32 off")
    print(f"network: T {T} ({steps} steps in), F {F}, H {a.hidden}, {a.layers} layer(s), "
          f"{fpw / 1e6:.4f} MFLOP/window; best of {a.runs} after 3 warm-ups")
    print(f"{'B':>8} {'mode':>9} {'best ms':>10} {'windows/s':>14} {'GFLOP/s':>10}")
    with torch.inference_mode():
        for B in a.batches:
            windows = torch.randn(B, T, F)  # pageable, as the window store hands them on
            pinned = windows[:, :steps].contiguous().pin_memory()
            x_dev = windows[:, :steps].to(dev)
            out = {}

            def on_device():
                out["y"] = net(x_dev)

            def from_pageable():
                out["y"] = net(windows[:, :steps].to(dev)).cpu()

            def from_pinned():
                out["y"] = net(pinned.to(dev, non_blocking=True)).to("cpu")

            for mode, fn in (("device", on_device), ("pageable", from_pageable),
                             ("pinned", from_pinned)):
                t = best_of(fn, a.runs)
                print(f"{B:>8} {mode:>9} {t * 1e3:>10.3f} {B / t:>14.0f} "
                      f"{fpw * B / t / 1e9:>10.1f}", flush=True)
            windows = pinned = x_dev = None  # free this size's memory before the next
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())

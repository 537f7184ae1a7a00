#!/usr/bin/python3
"""CPU scoring throughput: anomalyd's CPU backend against torch.nn.LSTM in the same run.

Both run the benchmark network of issue 4 (one LSTM layer, F = 8, H = 64, 63 steps of a
64-bucket window, a linear head) on random inputs, for each batch size and thread count, best
of several runs. Prints one line per case and the ratio ours / torch.

    bench/score.py BENCH_SCORE_BINARY [--threads 1,2] [--batches 1024,16384,131072]
"""

import argparse
import json
import subprocess
import sys
import time

import torch

STEPS, F, H = 63, 8, 64


def torch_windows_per_second(batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    lstm = torch.nn.LSTM(F, H, 1)
    head = torch.nn.Linear(H, F)
    # Step-major input and h_n: torch's fastest way to run this (batch_first is half as fast).
    x = torch.rand(STEPS, batch, F) * 2 - 1
    best, total, runs = float("inf"), 0.0, 0
    with torch.inference_mode():
        while runs < 3 or (total < 1.0 and runs < 50):
            t0 = time.perf_counter()
            _, (h_n, _) = lstm(x)
            head(h_n[-1])
            t = time.perf_counter() - t0
            best, total, runs = min(best, t), total + t, runs + 1
    return batch / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_score")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1024,16384,131072")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    batches = args.batches.split(",")
    flops = 2.0 * (F * 4 * H + H * 4 * H) * STEPS + 2.0 * H * F
    print(f"torch {torch.__version__}, {torch.backends.mkldnn.is_available() and 'oneDNN' or 'no oneDNN'}")
    worst = None
    for n in threads:
        out = subprocess.run([args.bench_score, str(n)] + batches, check=True,
                             capture_output=True, text=True).stdout
        ours = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        print(f"anomalyd backend: {ours[0]['backend']}")
        for row in ours:
            peer = torch_windows_per_second(row["batch"], n)
            ratio = row["windows_per_second"] / peer
            worst = ratio if worst is None else min(worst, ratio)
            print(f"threads={n} batch={row['batch']:>6}: anomalyd {row['windows_per_second']:>9,.0f}"
                  f" windows/s ({row['gflops']:.1f} GFLOP/s), torch.nn.LSTM {peer:>9,.0f}"
                  f" windows/s ({peer * flops / 1e9:.1f} GFLOP/s): ratio {ratio:.2f}x")
            sys.stdout.flush()
    print(f"worst ratio: {worst:.2f}x (target 1.5x)")


if __name__ == "__main__":
    main()

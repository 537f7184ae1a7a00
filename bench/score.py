#!/usr/bin/python3
"""CPU scoring throughput: anomalyd's CPU backend against torch.nn.LSTM in the same run.

Both run the benchmark network (one LSTM layer, F = 8, H = 64, 63 steps of a 64-bucket window,
a linear head) on random inputs, for each batch size and thread count, best of several runs,
and the line per case prints the ratio ours / torch. Stream mode (one step per window from a
kept state) is timed on both sides too: anomalyd's ad_lstm_step, and torch.nn.LSTM over one
step with the state carried in (h, c); a second line per case prints those, and how many times
fewer seconds a window costs in stream mode than windowed (issue target: 30x).

Both sides are pinned the same way, each in a process of its own started with the same
environment: N threads means N worker threads for anomalyd (each calling single-threaded
OpenBLAS) and, for torch, torch.set_num_threads(N) with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS
and MKL_NUM_THREADS set to N before torch is imported (torch.set_num_threads alone leaves
OpenBLAS' own pool alone). Each side prints what it really runs: anomalyd its OpenBLAS build,
the kernels OpenBLAS picked and the gate loop's SIMD width; torch its BLAS library, whether
oneDNN serves the LSTM, and the operators that take its time (from torch's profiler).

OPENBLAS_CORETYPE (this environment sets Haswell, i.e. AVX2 kernels on AVX-512 machines) is
left as it is unless --native-kernels is given, which removes it for both sides.

    bench/score.py BENCH_SCORE_BINARY [--threads 1,2] [--batches 1024,16384,131072]
                   [--native-kernels]
"""

import argparse
import json
import os
import subprocess
import sys
import time

STEPS, F, H = 63, 8, 64
FLOPS = 2.0 * (F * 4 * H + H * 4 * H) * STEPS + 2.0 * H * F


def peer(threads, batches):
    """Runs in a child whose BLAS and OpenMP pools were pinned before torch was imported."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(7)
    lstm = torch.nn.LSTM(F, H, 1)
    head = torch.nn.Linear(H, F)
    with torch.inference_mode():
        # What the forward really runs: the operators that take its time.
        x = torch.rand(STEPS, 256, F) * 2 - 1
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            _, (h_n, _) = lstm(x)
            head(h_n[-1])
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        top = [e.key for e in ops if e.self_cpu_time_total > 0][:6]
        blas = sorted({line.split()[-1] for line in open("/proc/self/maps")
                       if "blas" in line.lower() and ".so" in line})
        print(json.dumps({"runs": {
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
            "blas_libraries": [os.path.basename(b) for b in blas],
            "onednn_lstm": any("mkldnn" in k for k in top),
            "top_operators": top}}), flush=True)
        for batch in batches:
            # Step-major input and h_n: torch's fastest way to run this (batch_first is slower).
            x = torch.rand(STEPS, batch, F) * 2 - 1
            best, total, runs = float("inf"), 0.0, 0
            while runs < 3 or (total < 1.0 and runs < 50):
                t0 = time.perf_counter()
                _, (h_n, _) = lstm(x)
                head(h_n[-1])
                t = time.perf_counter() - t0
                best, total, runs = min(best, t), total + t, runs + 1
            # Stream mode: one step of every window from a carried state.
            x1 = torch.rand(1, batch, F) * 2 - 1
            _, state = lstm(x)
            best_step, total, runs = float("inf"), 0.0, 0
            while runs < 3 or (total < 1.0 and runs < 2000):
                t0 = time.perf_counter()
                _, state = lstm(x1, state)
                head(state[0][-1])
                t = time.perf_counter() - t0
                best_step, total, runs = min(best_step, t), total + t, runs + 1
            print(json.dumps({"batch": batch, "windows_per_second": batch / best,
                              "steps_per_second": batch / best_step}), flush=True)


def child_env(threads, native):
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    if native:
        env.pop("OPENBLAS_CORETYPE", None)
    return env


def rows(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_score")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1024,16384,131072")
    ap.add_argument("--native-kernels", action="store_true",
                    help="unset OPENBLAS_CORETYPE for both sides")
    ap.add_argument("--peer", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.peer:
        peer(args.peer, batches)
        return
    worst = worst_fewer = None
    coretype = "(unset)" if args.native_kernels else os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    print(f"OPENBLAS_CORETYPE for both sides: {coretype}")
    for n in [int(t) for t in args.threads.split(",")]:
        env = child_env(n, args.native_kernels)
        ours = rows([args.bench_score, str(n)] + [str(b) for b in batches], env)
        theirs = rows([sys.executable, os.path.abspath(__file__), args.bench_score,
                       "--batches", args.batches, "--peer", str(n)], env)
        print(f"threads={n}: anomalyd runs {ours[0]['backend']}")
        r = theirs[0]["runs"]
        print(f"threads={n}: torch {r['torch']} runs {r['threads']} intra-op thread(s), "
              f"OPENBLAS_NUM_THREADS={r['blas_threads_env']}, BLAS {', '.join(r['blas_libraries'])}, "
              f"oneDNN LSTM: {'yes' if r['onednn_lstm'] else 'no'}; "
              f"top operators: {', '.join(r['top_operators'])}")
        peers = {row["batch"]: row["windows_per_second"] for row in theirs[1:]}
        peer_steps = {row["batch"]: row["steps_per_second"] for row in theirs[1:]}
        for row in ours:
            other = peers[row["batch"]]
            ratio = row["windows_per_second"] / other
            worst = ratio if worst is None else min(worst, ratio)
            print(f"threads={n} batch={row['batch']:>6}: anomalyd {row['windows_per_second']:>9,.0f}"
                  f" windows/s ({row['gflops']:.1f} GFLOP/s), torch.nn.LSTM {other:>9,.0f}"
                  f" windows/s ({other * FLOPS / 1e9:.1f} GFLOP/s): ratio {ratio:.2f}x", flush=True)
            steps, other_steps = row["steps_per_second"], peer_steps[row["batch"]]
            fewer = steps / row["windows_per_second"]
            worst_fewer = fewer if worst_fewer is None else min(worst_fewer, fewer)
            print(f"threads={n} batch={row['batch']:>6}: stream step: anomalyd {steps:>11,.0f}"
                  f" windows/s ({fewer:.1f}x fewer seconds a window than windowed), torch.nn.LSTM"
                  f" stepping {other_steps:>11,.0f} windows/s: ratio {steps / other_steps:.2f}x",
                  flush=True)
    print(f"worst ratio: {worst:.2f}x (target 1.5x)")
    print(f"stream step against windowed, worst: {worst_fewer:.1f}x fewer seconds a window"
          f" (target 30x)")


if __name__ == "__main__":
    main()

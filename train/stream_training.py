"""Stream models (docs/models.md, "Modes"): how the reference trainer lays out, trains and
predicts with a model that carries each entity's state from bucket to bucket.

The daemon runs a stream model the way it runs a windowed one for an entity's first window (a
warm-up from a zero state over the T - 1 buckets before the newest) and then moves the state on
by one bucket each time the entity's next bucket closes with data; a bucket without a window
(no data in it) breaks the chain, and the next window warms up again from the ring. Training
follows the same rules, so the states it learns from are the states the daemon will have:

* each entity's windows of consecutive buckets are chained into a run, whose inputs are the
  first window's T - 1 buckets and then one bucket per window;
* the network reads a run from a zero state; a prediction counts in the loss once it has seen
  at least T - 1 inputs (the warm-up's length), as in the daemon;
* truncated back-propagation: a run is read in segments of a burn-in chunk plus CHUNKS chunks
  of T - 1 steps each, the state carried (detached) from chunk to chunk and one optimizer step
  per chunk; each epoch cuts the runs at a new random offset, so no bucket is always at a
  chunk's edge.
"""

import math
import time

import numpy as np
import torch

# Chunks of T - 1 steps a segment holds after its burn-in, and segments per optimizer batch.
CHUNKS = 8
SEGMENTS_PER_BATCH = 8


class Runs:
    """The windows chained into runs. For run r: idx[r] (window indices, oldest first),
    x[r] [L-1][I] (inputs, read by the network), y[r] [L-1][F] (each input's next bucket,
    the target), m[r] [L-1][F] float (the target's weight: 0 where it does not count),
    where L = T - 1 + len(idx[r]) buckets."""

    def __init__(self):
        self.idx, self.x, self.y, self.m = [], [], [], []


def chain(windows, step_ms):
    """Window indices of each run: an entity's windows whose newest buckets follow each other
    without a gap, oldest first."""
    order = np.lexsort((np.arange(len(windows.bucket_ms)), windows.bucket_ms, windows.entity))
    runs, current = [], []
    for i in order:
        if (current and windows.entity[i] == windows.entity[current[-1]]
                and windows.bucket_ms[i] == windows.bucket_ms[current[-1]] + step_ms):
            current.append(int(i))
            continue
        if current:
            runs.append(current)
        current = [int(i)]
    if current:
        runs.append(current)
    return runs


def layout(windows, step_ms, mean, std, time_inputs, time_features, weights):
    """The runs as network inputs and targets. weights [N]: each window's target weight (0:
    the window does not count in the loss, e.g. it is held out)."""
    T = windows.values.shape[1]
    out = Runs()
    for run in chain(windows, step_ms):
        first = windows.values[run[0]]
        values = np.concatenate([first, windows.values[run[1:], -1, :]]) if len(run) > 1 \
            else first
        observed = np.concatenate([windows.observed[run[0]], windows.observed[run[1:], -1, :]]) \
            if len(run) > 1 else windows.observed[run[0]]
        with np.errstate(invalid="ignore", over="ignore"):
            z = (values - mean) / std
        z = np.where(np.isfinite(z), z, 0).astype(np.float32)
        L = len(z)
        x = z[:-1]
        if time_inputs:
            starts = (windows.bucket_ms[run[0]] - (T - 1) * step_ms
                      + np.arange(L - 1, dtype=np.int64) * step_ms)
            x = np.concatenate([x, time_features(starts, time_inputs)], axis=1)
        # Bucket q >= T - 1 is window run[q - T + 1]'s newest: only those are targets.
        w = np.zeros(L, dtype=np.float32)
        w[T - 1:] = weights[run]
        m = observed[1:].astype(np.float32) * w[1:, None]
        out.idx.append(np.asarray(run))
        out.x.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        out.y.append(torch.from_numpy(np.ascontiguousarray(z[1:])))
        out.m.append(torch.from_numpy(np.ascontiguousarray(m)))
    return out


def _segments(runs, T, rng):
    """This epoch's segments: (run, start, end) cut at a random offset; consecutive segments
    overlap by a burn-in chunk so that every target is read with context."""
    K = T - 1
    length = K * (1 + CHUNKS)
    stride = length - K
    found = []
    for r, x in enumerate(runs.x):
        n = len(x)
        start = -int(rng.integers(0, stride))
        while start < n:
            lo = max(0, start)
            if start + length > 0 and runs.m[r][lo:start + length].sum() > 0:
                found.append((r, lo, min(n, start + length)))
            start += stride
    return found


def _batch(runs, segments, T):
    """Pads segments to one length: inputs, targets and weights [B][len][.]; a target counts
    only after T - 1 inputs of its own segment (the burn-in)."""
    length = max(e - s for _, s, e in segments)
    I, F = runs.x[0].shape[1], runs.y[0].shape[1]
    B = len(segments)
    x, y, m = torch.zeros(B, length, I), torch.zeros(B, length, F), torch.zeros(B, length, F)
    for b, (r, s, e) in enumerate(segments):
        x[b, :e - s] = runs.x[r][s:e]
        y[b, :e - s] = runs.y[r][s:e]
        m[b, :e - s] = runs.m[r][s:e]
        m[b, :min(T - 2, e - s)] = 0
    return x, y, m


def _weighted_mse(pred, target, weight):
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def predict(net, runs, n_windows):
    """Each window's prediction of its newest bucket, the network reading each run from a zero
    state: [n_windows][F] (NaN for a window in no run)."""
    F = runs.y[0].shape[1] if runs.y else 0
    out = torch.full((n_windows, F), math.nan)
    with torch.no_grad():
        for idx, x in zip(runs.idx, runs.x):
            h, _ = net.lstm(x[None])
            pred = net.head(h[0])
            # Window idx[j]'s newest bucket is T - 1 + j; the prediction of it is at T - 2 + j.
            out[torch.from_numpy(idx)] = pred[len(x) - len(idx):]
    return out


def train(net, runs, val, T, args, log, error_type):
    """Truncated back-propagation through the runs; logs each epoch's losses. val is
    (runs for prediction, window indices held out, targets, masks). Returns the last epoch's
    training loss and the validation loss."""
    K = T - 1
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    train_loss = val_loss = math.nan
    for epoch in range(1, args.epochs + 1):
        started = time.monotonic()
        net.train()
        total, weight = 0.0, 0.0
        segments = _segments(runs, T, rng)
        order = rng.permutation(len(segments))
        for i in range(0, len(order), SEGMENTS_PER_BATCH):
            x, y, m = _batch(runs, [segments[j] for j in order[i:i + SEGMENTS_PER_BATCH]], T)
            state = None
            for c in range(0, x.shape[1], K):
                out, state = net.lstm(x[:, c:c + K], state)
                cm = m[:, c:c + K]
                if float(cm.sum()) > 0:
                    loss = _weighted_mse(net.head(out), y[:, c:c + K], cm)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total, weight = total + float(loss) * float(cm.sum()), weight + float(cm.sum())
                state = tuple(s.detach() for s in state)
        train_loss = total / weight if weight else math.nan
        net.eval()
        pred = predict(net, val[0], int(val[1].max()) + 1)[val[1]]
        m = val[3].to(pred.dtype)
        val_loss = float(((pred - val[2]) ** 2 * m).sum() / m.sum().clamp(min=1.0))
        log("epoch %d/%d: train loss %.6g, validation loss %.6g (%d segments, %.1f s)"
            % (epoch, args.epochs, train_loss, val_loss, len(segments),
               time.monotonic() - started))
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise error_type("training diverged at epoch %d (loss %s); try a smaller --lr"
                             % (epoch, train_loss))
    return train_loss, val_loss


def golden_steps(net, warm_up_input, steps):
    """The golden sample's steps after the warm-up: the warm-up's first `steps` inputs again
    (any finite inputs check the backend), and the output after each."""
    with torch.no_grad():
        _, state = net.lstm(warm_up_input[None])
        inputs = warm_up_input[:steps]
        outputs = []
        for row in inputs:
            out, state = net.lstm(row[None, None], state)
            outputs.append(net.head(out[0, -1]))
    return inputs.numpy(), torch.stack(outputs).numpy()

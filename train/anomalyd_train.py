#!/usr/bin/python3
"""anomalyd's reference trainer (docs/training.md).

Reads windows (the daemon's JSON-lines export, or a CSV of per-entity rows), trains the LSTM
that docs/models.md specifies to predict each window's newest step from the steps before it,
calibrates the score on the newest windows held out, and writes a complete model version
(model.safetensors and manifest.json) into the model store, then points CURRENT at it.

The store only ever sees whole versions: the folder is written under a temporary name and
renamed into place, and CURRENT is replaced with a rename, so a daemon polling the store (or a
trainer that fails or is stopped half way) can never expose a half-written model.

Exit status: 0 written, 1 failure (I/O, training, stopped by a signal), 2 bad input or usage.
"""

import argparse
import csv
import datetime
import hashlib
import heapq
import json
import math
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import feedback_marks  # noqa: E402
import safetensors_io  # noqa: E402
import stream_training  # noqa: E402

PROG = "anomalyd_train"
# Below this a standard deviation is rounding noise (float32 holds about 7 digits), and
# dividing by it would turn noise into huge normalized values: such a feature gets std 1.
STD_FLOOR = 1e-6
# The calibrated threshold is this percentile of the held-out scores when there are enough of
# them for it to mean something; with fewer, mean + FALLBACK_STDS standard deviations.
THRESHOLD_PERCENTILE = 99.9
PERCENTILE_MIN_WINDOWS = 1000
FALLBACK_STDS = 4.0
GOLDEN_TOLERANCE = 1e-4
FLOAT32_MAX = float(np.finfo(np.float32).max)
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
VERSION_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
FILL_POLICIES = ("zero", "carry", "nan")
# How several rows of one entity and bucket combine, as the daemon aggregates a feature's
# observations in a bucket (docs/windows.md): count, count_if and sum add up, mean averages,
# min and max keep the extreme, last (and a Prometheus query) keeps the latest row.
AGGREGATIONS = ("sum", "mean", "min", "max", "last")


class InputError(Exception):
    """Bad input or usage (exit status 2): the message names the file and line at fault."""


class TrainingError(Exception):
    """Training produced nothing usable (exit status 1)."""


class Stopped(Exception):
    """A signal asked us to stop; raised from the handler so that cleanup runs."""


def log(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


# ---- input ----

class Window:
    """One window: its newest bucket's start, values [T][F] (float32, NaN where the export
    had null), mask [T][F] (bool: the bucket had data for the feature) and the entity's
    labels (a dict), which operators' marks (--feedback) name."""

    __slots__ = ("bucket_ms", "values", "mask", "labels", "false_positive")

    def __init__(self, bucket_ms, values, mask, labels=None):
        self.bucket_ms, self.values, self.mask = bucket_ms, values, mask
        self.labels = labels or {}
        self.false_positive = False


class Layout:
    """What every window must agree on: features, T (window) and step_ms. A value given on the
    command line is fixed from the start; otherwise the first window fixes it. Remembering
    where each value came from lets an error name both places that disagree."""

    def __init__(self, features, window, step_ms):
        self.features, self.window, self.step_ms = features, window, step_ms
        self.origin = {"features": "--features", "window": "--window", "step_ms": "--step-ms"}

    def check(self, where, **found):
        for key, value in found.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
                self.origin[key] = where
            elif getattr(self, key) != value:
                raise InputError("%s: %s is %s, but %s says %s" % (
                    where, key, json.dumps(value), self.origin[key],
                    json.dumps(getattr(self, key))))


def _is_int(x):
    return type(x) is int


def _parse_window(obj, where, layout):
    """Checks one exported window (docs/windows.md, "Window export") and converts it."""
    if not isinstance(obj, dict):
        raise InputError("%s: not a JSON object" % where)
    for key in ("bucket_start_ms", "step_ms", "labels", "features", "values", "mask"):
        if key not in obj:
            raise InputError("%s: no %s" % (where, key))
    features, values, mask = obj["features"], obj["values"], obj["mask"]
    if not _is_int(obj["bucket_start_ms"]):
        raise InputError("%s: bucket_start_ms is not an integer" % where)
    if not _is_int(obj["step_ms"]) or obj["step_ms"] <= 0:
        raise InputError("%s: step_ms is not a positive integer" % where)
    if not isinstance(obj["labels"], dict):
        raise InputError("%s: labels is not an object" % where)
    if (not isinstance(features, list) or not features
            or not all(isinstance(f, str) for f in features)
            or len(set(features)) != len(features)):
        raise InputError("%s: features must be a non-empty list of distinct names" % where)
    if not isinstance(values, list) or len(values) < 2:
        raise InputError("%s: values must hold at least 2 rows (T >= 2)" % where)
    layout.check(where, features=features, window=len(values), step_ms=obj["step_ms"])
    shape = (len(values), len(features))
    for name, rows, types in (("values", values, (int, float, type(None))),
                              ("mask", mask, (int,))):
        if (not isinstance(rows, list) or len(rows) != shape[0]
                or not all(isinstance(r, list) and len(r) == shape[1] for r in rows)):
            raise InputError("%s: %s must be %d rows of %d" % (where, name, *shape))
        if not {type(v) for r in rows for v in r} <= set(types):
            raise InputError("%s: %s holds a value of the wrong type" % (where, name))
    m = np.array(mask, dtype=np.int64)
    if not np.isin(m, (0, 1)).all():
        raise InputError("%s: mask holds a value other than 0 and 1" % where)
    with np.errstate(over="ignore"):  # beyond float32: infinite, so not an observation
        x = np.array(values, dtype=np.float32)
    return Window(obj["bucket_start_ms"], x, m.astype(bool), obj["labels"])


def _reject_constant(name):
    raise ValueError("%s is not JSON (non-finite values are null)" % name)


def iter_export(paths, detector, layout):
    """Yields the windows of one detector from export files, in file order. Without
    --detector the first window's detector is the one; a window of another is an error,
    since mixing detectors would mix models."""
    chosen, chosen_at = detector, None
    for path in paths:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                where = "%s:%d" % (path, lineno)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line, parse_constant=_reject_constant)
                except ValueError as e:
                    if not line.endswith(b"\n"):
                        # The daemon may still be appending: a cut last line is not an error.
                        log("%s: skipping an incomplete last line" % where)
                        continue
                    raise InputError("%s: not valid JSON: %s" % (where, e)) from None
                name = obj.get("detector") if isinstance(obj, dict) else None
                if not isinstance(name, str):
                    raise InputError("%s: no detector name" % where)
                if chosen is None:
                    chosen, chosen_at = name, where
                elif name != chosen:
                    if chosen_at:
                        raise InputError("%s: a window of detector %r, but %s is of %r: choose "
                                         "one with --detector" % (where, name, chosen_at, chosen))
                    continue
                yield _parse_window(obj, where, layout)


def per_feature(option, spec, features, choices, default):
    """A per-feature option ("carry,app.requests=zero": a default, then per-feature values) as
    one value per feature, each one of choices."""
    per_feature = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.rpartition("=")
        if value not in choices:
            raise InputError("%s: %r is not one of %s" % (option, value, ", ".join(choices)))
        if not name:
            default = value
        elif name not in features:
            raise InputError("%s: %r is not a feature" % (option, name))
        else:
            per_feature[name] = value
    return [per_feature.get(f, default) for f in features]


def parse_fill(spec, features):
    """--fill as two boolean arrays over the features: those that carry and those that fill
    NaN (the rest fill zero)."""
    policies = per_feature("--fill", spec, features, FILL_POLICIES, "carry")
    return np.array([p == "carry" for p in policies]), np.array([p == "nan" for p in policies])


def parse_aggregate(spec, features):
    """--aggregate as one aggregation name per feature."""
    return per_feature("--aggregate", spec, features, AGGREGATIONS, "last")


class _Bucket:
    """The rows of one entity and bucket so far, combined per feature as they come."""

    __slots__ = ("line", "time", "values", "counts")

    def __init__(self, line, F):
        self.line, self.time = line, None
        self.values = [None] * F
        self.counts = [0] * F

    def add(self, time_ms, cells, aggs):
        later = self.time is None or time_ms >= self.time
        for f, v in enumerate(cells):
            if v is None:
                continue
            old, agg = self.values[f], aggs[f]
            if old is None:
                self.values[f] = v
            elif agg in ("sum", "mean"):
                self.values[f] = old + v
            elif agg == "min":
                self.values[f] = min(old, v)
            elif agg == "max":
                self.values[f] = max(old, v)
            elif later:
                self.values[f] = v
            self.counts[f] += 1
        if later:
            self.time = time_ms

    def finish(self, aggs):
        cells = [None if v is None else (v / self.counts[f] if aggs[f] == "mean" else v)
                 for f, v in enumerate(self.values)]
        return (self.line,
                np.array([0.0 if v is None else v for v in cells], np.float32),
                np.array([v is not None for v in cells]))


def _csv_value(text, where, feature):
    """A feature cell: None when empty (no data), else a number that float32 holds."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise InputError("%s: %s %r is not a finite number" % (where, feature, text))
    return value


def read_csv(path, layout, fill_spec, aggregate_spec="last"):
    """Builds windows from a CSV of rows of time_ms, label columns and feature columns
    (docs/training.md, "Input: CSV"), in any order. Several rows of one entity and bucket are
    combined per --aggregate, as the daemon combines a bucket's observations. Each entity's
    buckets are laid on the step grid as the daemon lays them: a missing bucket or an empty
    cell has mask 0 and is filled per --fill, buckets before the entity's first row are zeros
    with mask 0, and every bucket with a row gives the window of T buckets that ends with
    it."""
    entities = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError("%s: empty file (a header row is needed)" % path)
            if len(set(header)) != len(header):
                raise InputError("%s:1: a column name appears twice" % path)
            if "time_ms" not in header:
                raise InputError("%s:1: no time_ms column" % path)
            features = layout.features or [c for c in header if "." in c]
            missing = [c for c in features if c not in header]
            if missing:
                raise InputError("%s:1: no column %s" % (path, ", ".join(missing)))
            if not features:
                raise InputError("%s:1: no feature column (names with a '.', like "
                                 "app.requests, or name them with --features)" % path)
            layout.check("%s:1" % path, features=features)
            time_col = header.index("time_ms")
            feature_cols = [header.index(c) for c in features]
            aggs = parse_aggregate(aggregate_spec, features)
            label_cols = [i for i, c in enumerate(header) if c != "time_ms" and c not in features]
            for row in reader:
                where = "%s:%d" % (path, reader.line_num)
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise InputError("%s: %d fields, but the header has %d"
                                     % (where, len(row), len(header)))
                try:
                    time_ms = int(row[time_col])
                    bucket = time_ms // layout.step_ms
                except ValueError:
                    raise InputError("%s: time_ms %r is not an integer"
                                     % (where, row[time_col])) from None
                cells = [_csv_value(row[c].strip(), where, name)
                         for c, name in zip(feature_cols, features)]
                rows = entities.setdefault(tuple(row[i] for i in label_cols), {})
                if bucket not in rows:
                    rows[bucket] = _Bucket(reader.line_num, len(features))
                rows[bucket].add(time_ms, cells, aggs)
        except UnicodeDecodeError as e:
            raise InputError("%s:%d: not valid UTF-8: %s" % (path, reader.line_num + 1, e)) \
                from None
        except csv.Error as e:
            raise InputError("%s:%d: %s" % (path, reader.line_num, e)) from None
    fill = parse_fill(fill_spec, features)
    label_names = [header[i] for i in label_cols]
    for key in sorted(entities):
        rows = {b: acc.finish(aggs) for b, acc in entities[key].items()}
        yield from _entity_windows(rows, layout.window, layout.step_ms, fill,
                                   dict(zip(label_names, key)))


def _entity_windows(rows, T, step, fill, labels=None):
    """The windows ending at each of one entity's rows. Only the last T - 1 buckets of a gap
    can reach a window that ends at a row, and empty buckets change no carried value, so a
    gap is laid out as at most T - 1 buckets: a sparse entity costs no more than a dense one."""
    carry_f, nan_f = fill
    F = len(carry_f)
    carried = np.zeros(F, dtype=np.float32)
    series_v = [np.zeros(F, dtype=np.float32)] * (T - 1)
    series_m = [np.zeros(F, dtype=bool)] * (T - 1)
    ends, previous = [], None
    for bucket in sorted(rows):
        _, values, mask = rows[bucket]
        empty = np.where(carry_f, carried, np.where(nan_f, np.float32(math.nan), 0))
        if previous is not None:
            gap = min(bucket - previous - 1, T - 1)
            series_v += [empty] * gap
            series_m += [np.zeros(F, dtype=bool)] * gap
        series_v.append(np.where(mask, values, empty))
        series_m.append(mask)
        carried = np.where(mask, values, carried)
        ends.append((bucket, len(series_v)))
        previous = bucket
    values = np.stack(series_v).astype(np.float32)
    masks = np.stack(series_m)
    for bucket, end in ends:
        yield Window(bucket * step, values[end - T:end], masks[end - T:end], labels)


class WindowSet:
    """All windows to learn from as arrays, oldest first: newest bucket start [N], values
    [N][T][F] (float32, NaN where there is no finite value), observed [N][T][F] (mask 1
    and a finite value: a cell to learn from) and false_positive [N] (the window is inside an
    alert an operator marked a false positive)."""

    def __init__(self, bucket_ms, values, observed, false_positive=None, entity=None):
        self.bucket_ms, self.values, self.observed = bucket_ms, values, observed
        self.false_positive = (false_positive if false_positive is not None
                               else np.zeros(len(bucket_ms), dtype=bool))
        # [N]: which entity each window is of (the same number for the same labels).
        self.entity = entity if entity is not None else np.zeros(len(bucket_ms), dtype=np.int64)


# ---- operators' marks ----

class Marks:
    """Marks of alerts (docs/feedback.md): the JSON lines the daemon keeps in
    <store>/<model>/feedback.jsonl, the last line of an id winning. A window is inside a mark
    when its entity's labels are the mark's and its end (newest bucket's start + step) lies in
    [from_ms, through_ms] (through_ms null: the alert still fired when it was marked)."""

    def __init__(self, paths, detector):
        try:
            found = feedback_marks.read_marks(paths, detector, log)
        except feedback_marks.MarksError as e:
            raise InputError(str(e)) from None
        self.marks = [m for m, _ in found]
        self.by_labels = {}
        for m in self.marks:
            key = tuple(sorted(m["labels"].items()))
            self.by_labels.setdefault(key, []).append(m)

    def verdict(self, window, step_ms):
        """"true_positive", "false_positive" or None for one window (a true positive wins
        over a false positive that overlaps it)."""
        marks = self.by_labels.get(tuple(sorted(window.labels.items())))
        if not marks:
            return None
        end = window.bucket_ms + step_ms
        found = None
        for m in marks:
            through = m["through_ms"] if m["through_ms"] is not None else math.inf
            if m["from_ms"] <= end <= through:
                if m["verdict"] == "true_positive":
                    return "true_positive"
                found = "false_positive"
        return found


def load_windows(args, layout, marks=None, counts=None):
    """Reads the input; orders the windows by their newest bucket (then input order). With
    --max-windows only the newest N are kept, holding no more than N in memory. Windows inside
    a true positive (marks) are left out; those inside a false positive are flagged; counts
    (a dict) gets how many of each."""
    if args.csv:
        source = read_csv(args.csv, layout, args.fill, args.aggregate)
    else:
        source = iter_export(args.windows, args.detector, layout)
    if marks is not None:
        source = _apply_marks(source, marks, layout, counts)
    keyed = ((w.bucket_ms, seq, w) for seq, w in enumerate(source))
    if args.max_windows:
        kept = heapq.nlargest(args.max_windows, keyed, key=lambda k: k[:2])
    else:
        kept = list(keyed)
    if not kept:
        return None
    kept.sort(key=lambda k: k[:2])
    values = np.stack([w.values for _, _, w in kept])
    observed = np.stack([w.mask for _, _, w in kept]) & np.isfinite(values)
    false_positive = np.array([getattr(w, "false_positive", False) for _, _, w in kept])
    ids = {}
    entity = np.array([ids.setdefault(tuple(sorted(w.labels.items())), len(ids))
                       for _, _, w in kept], dtype=np.int64)
    return WindowSet(np.array([b for b, _, _ in kept], dtype=np.int64), values, observed,
                     false_positive, entity)


def _apply_marks(source, marks, layout, counts):
    """Operators' marks on the windows as they stream by: a true positive's windows are an
    incident, not normal data, and are left out; a false positive's are normal data the model
    should learn better, and are flagged to be weighted up in training."""
    for w in source:
        verdict = marks.verdict(w, layout.step_ms)
        if verdict == "true_positive":
            counts["true_positive_windows_left_out"] += 1
            continue
        if verdict == "false_positive":
            counts["false_positive_windows"] += 1
            w.false_positive = True
        yield w


# ---- the model ----

class Network(nn.Module):
    """docs/models.md's network. The children are named lstm and head so that state_dict()
    gives exactly the tensor names the daemon's loader looks for. inputs is the features plus
    two per time input; the head predicts the features."""

    def __init__(self, features, hidden, layers, inputs=None):
        super().__init__()
        self.lstm = nn.LSTM(inputs or features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


def floored_std(std, scale):
    """std, or 1.0 where it is below STD_FLOOR * scale (a constant feature, or no data)."""
    return np.where(np.isfinite(std) & (std > STD_FLOOR * scale), std, 1.0)


def normalization(values, observed):
    """Per-feature mean and (population) std over the observed cells of the training
    windows, rounded to float32: the daemon normalizes in float32 with exactly these. A
    feature without data gets mean 0."""
    F = values.shape[2]
    mean, std = np.zeros(F), np.zeros(F)
    for f in range(F):
        x = values[:, :, f][observed[:, :, f]].astype(np.float64)
        if x.size:
            mean[f], std[f] = x.mean(), x.std()
    std = floored_std(std, np.maximum(1.0, np.abs(mean)))
    return mean.astype(np.float32), std.astype(np.float32)


TIME_PERIODS_MS = {"day": 86400000, "week": 7 * 86400000}
# The Unix epoch was a Thursday: a week's phase starts on Monday 00:00 UTC.
TIME_OFFSETS_MS = {"day": 0, "week": 3 * 86400000}


def time_features(starts_ms, time_inputs):
    """[..., 2K] float32: sin and cos of each period's phase at each bucket start (UTC), as the
    daemon computes them (gpu/score.c)."""
    cols = []
    for name in time_inputs:
        period = TIME_PERIODS_MS[name]
        phase = np.mod(starts_ms + TIME_OFFSETS_MS[name], period) / float(period)
        cols += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
    return np.stack(cols, axis=-1).astype(np.float32)


def with_time(x, bucket_ms, step_ms, time_inputs):
    """Appends the time inputs of each input step (steps 0..T-2 of windows whose newest bucket
    starts at bucket_ms) to the network inputs x [N][T-1][F]."""
    if not time_inputs:
        return x
    steps = x.shape[1]
    starts = (np.asarray(bucket_ms, dtype=np.int64)[:, None]
              - (steps - np.arange(steps, dtype=np.int64))[None, :] * step_ms)
    return torch.cat([x, torch.from_numpy(time_features(starts, time_inputs))], dim=2)


def prepare(values, observed, mean, std):
    """Network inputs (steps 0..T-2, normalized), targets (step T-1, normalized) and which
    targets count. A cell without a finite value (null in the export) enters the network as
    0, the feature's mean; a cell with mask 0 enters with its filled value, as the daemon
    hands it on. Only observed targets count in the loss and the score."""
    with np.errstate(invalid="ignore", over="ignore"):
        x = (values - mean) / std
    x = np.where(np.isfinite(x), x, 0).astype(np.float32)
    return (torch.from_numpy(np.ascontiguousarray(x[:, :-1, :])),
            torch.from_numpy(np.ascontiguousarray(x[:, -1, :])),
            torch.from_numpy(np.ascontiguousarray(observed[:, -1, :])))


def masked_mse(pred, target, mask):
    """Mean squared error over the observed cells only: a bucket without data has nothing to
    be predicted."""
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def predict(net, inputs, batch_size):
    with torch.no_grad():
        return torch.cat([net(inputs[i:i + batch_size])
                          for i in range(0, len(inputs), batch_size)])


def train(net, data, val, args):
    """Adam on masked MSE, shuffled mini-batches; logs each epoch's losses. Returns the last
    epoch's training loss and the validation loss."""
    x, y, m = data
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    train_loss = val_loss = math.nan
    for epoch in range(1, args.epochs + 1):
        started = time.monotonic()
        net.train()
        total, weight = 0.0, 0.0
        order = torch.randperm(len(x))
        for i in range(0, len(x), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = masked_mse(net(x[idx]), y[idx], m[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            cells = float(m[idx].sum())
            total, weight = total + float(loss) * cells, weight + cells
        train_loss = total / weight
        net.eval()
        val_loss = float(masked_mse(predict(net, val[0], args.batch_size), val[1], val[2]))
        log("epoch %d/%d: train loss %.6g, validation loss %.6g (%.1f s)"
            % (epoch, args.epochs, train_loss, val_loss, time.monotonic() - started))
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise TrainingError("training diverged at epoch %d (loss %s); try a smaller --lr"
                                % (epoch, train_loss))
    return train_loss, val_loss


def calibrate(pred, target, mask):
    """docs/models.md's score on held-out windows: error_std per feature, then each window's
    score, their mean and std, and the threshold (see THRESHOLD_PERCENTILE).

    error_std is the standard deviation of the normalized error around zero (its root mean
    square over observed cells), not around the error's own mean: the score divides the raw
    error by it, so only this makes a held-out window score about 1. Around the mean, a
    biased prediction (a constant feature predicted slightly off) would get a tiny error_std
    and dominate every score."""
    err = (pred - target).double().numpy()
    m = mask.numpy()
    count = m.sum(axis=0)
    rms = np.sqrt((np.where(m, err, 0) ** 2).sum(axis=0) / np.maximum(count, 1))
    error_std = floored_std(rms, 1.0).astype(np.float32)
    scored = m.any(axis=1)
    r2 = np.where(m, (err / error_std) ** 2, 0)[scored]
    scores = np.sqrt(r2.sum(axis=1) / m[scored].sum(axis=1))
    score_mean, score_std = float(scores.mean()), float(scores.std())
    if len(scores) >= PERCENTILE_MIN_WINDOWS:
        threshold = float(np.percentile(scores, THRESHOLD_PERCENTILE))
    else:
        threshold = score_mean + FALLBACK_STDS * score_std
    return error_std, score_mean, score_std, threshold, len(scores)


def state_tensors(net):
    """The weights in state_dict order (lstm layer by layer, then head), as numpy float32."""
    return [(name, t.detach().cpu().numpy()) for name, t in net.state_dict().items()]


# ---- the store ----

def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data):
    """Writes and fsyncs, so that a rename published after it never exposes an empty file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def refuse_existing(store, model, version):
    """Versions are immutable (a daemon may be serving this one): checked before training, so
    that a clash costs nothing, and again just before publishing."""
    path = os.path.join(store, model, version)
    if os.path.lexists(path):
        raise InputError("%s already exists: versions are never overwritten; choose another "
                         "--version" % path)


def publish(store, model, version, files):
    """Writes the version folder under a temporary name inside <store>/<model>/, renames it
    into place, then replaces CURRENT the same way. On any failure the store is left as it
    was: the temporary folder, the renamed folder if CURRENT could not follow, and the
    temporary CURRENT are removed."""
    model_dir = os.path.join(store, model)
    final = os.path.join(model_dir, version)
    os.makedirs(model_dir, exist_ok=True)
    refuse_existing(store, model, version)
    tmp_dir = os.path.join(model_dir, ".tmp-%s-%d" % (version, os.getpid()))
    tmp_current = os.path.join(model_dir, ".CURRENT.tmp-%d" % os.getpid())
    renamed = published = False
    try:
        os.mkdir(tmp_dir)
        for name, data in files:
            write_file(os.path.join(tmp_dir, name), data)
        fsync_dir(tmp_dir)
        os.rename(tmp_dir, final)
        renamed = True
        fsync_dir(model_dir)
        write_file(tmp_current, (version + "\n").encode())
        os.replace(tmp_current, os.path.join(model_dir, "CURRENT"))
        published = True
        fsync_dir(model_dir)
    finally:
        if not published:
            shutil.rmtree(final if renamed else tmp_dir, ignore_errors=True)
            if os.path.lexists(tmp_current):
                os.unlink(tmp_current)
    return final


# ---- the command ----

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="anomalyd_train.py",
        description="Train an anomalyd model version from exported windows or a CSV and "
                    "publish it in a model store (docs/training.md).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--windows", action="append", metavar="FILE",
                     help="the daemon's window export (JSON lines); repeat for more files")
    src.add_argument("--csv", metavar="FILE", help="one row per entity and bucket")
    p.add_argument("--store", help="the model store folder (model_store.path)")
    p.add_argument("--model", required=True, help="the model's name (the detector's model)")
    p.add_argument("--version", help="version folder name (default: UTC YYYYmmddTHHMMSSZ)")
    p.add_argument("--detector", help="use only the export's windows of this detector")
    p.add_argument("--features", help="f1,f2,...: the detector's features, in order")
    p.add_argument("--window", type=int, help="T, steps per window (CSV: required)")
    p.add_argument("--step-ms", type=int, help="the step in ms (CSV: required)")
    p.add_argument("--fill", default="carry",
                   help="CSV: how empty cells are filled: POLICY[,FEATURE=POLICY...] "
                        "with zero, carry or nan (default carry)")
    p.add_argument("--aggregate", default="last",
                   help="CSV: how several rows of one entity and bucket combine, as the "
                        "detector aggregates a feature: AGG[,FEATURE=AGG...] with sum, mean, "
                        "min, max or last (default last; sum for count, count_if and sum "
                        "features)")
    p.add_argument("--time-inputs", default="day,week",
                   help="periods whose phase at each step is a network input (sin and cos): "
                        "day, week, both (the default) or none, so that a daily or weekly "
                        "pattern is predicted rather than alerted on")
    p.add_argument("--mode", choices=("windowed", "stream"), default="windowed",
                   help="windowed: each window from a zero state (the default); stream: one "
                        "step per bucket from the state each entity carries, trained with "
                        "truncated back-propagation over its run of buckets (docs/models.md)")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size (1-1024)")
    p.add_argument("--layers", type=int, default=1, help="LSTM layers (1-4)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--validation", type=float, default=0.2,
                   help="share of the newest windows held out for validation and calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--max-windows", type=int, help="keep only the newest N windows")
    p.add_argument("--feedback", action="append", metavar="FILE",
                   help="operators' marks (the daemon's <store>/<model>/feedback.jsonl): "
                        "windows inside a true positive are left out, windows inside a false "
                        "positive count --false-positive-weight times in training")
    p.add_argument("--false-positive-weight", type=int, default=3,
                   help="how many times a training window inside a false positive counts "
                        "(1-100, default 3)")
    p.add_argument("--dry-run", action="store_true",
                   help="train and print the manifest, write nothing")
    args = p.parse_args(argv)

    problems = []
    if not args.dry_run and not args.store:
        problems.append("--store is required (or --dry-run)")
    if not MODEL_NAME.match(args.model):
        problems.append("--model may hold letters, digits, _ and - only")
    if args.version is not None and not VERSION_NAME.match(args.version):
        problems.append("--version may hold letters, digits, ., _ and -, and may not start "
                        "with .")
    if args.csv and (args.window is None or args.step_ms is None):
        problems.append("--csv needs --window and --step-ms")
    if args.detector and args.csv:
        problems.append("--detector applies to --windows only")
    for name, value, low, high in (("--hidden", args.hidden, 1, 1024),
                                   ("--layers", args.layers, 1, 4),
                                   ("--epochs", args.epochs, 1, None),
                                   ("--batch-size", args.batch_size, 1, None),
                                   ("--window", args.window, 2, None),
                                   ("--step-ms", args.step_ms, 1, None),
                                   ("--threads", args.threads, 1, None),
                                   ("--max-windows", args.max_windows, 2, None),
                                   ("--false-positive-weight", args.false_positive_weight, 1,
                                    100)):
        if value is not None and (value < low or (high is not None and value > high)):
            problems.append("%s must be %s" % (name, "%d to %d" % (low, high) if high
                                               else "at least %d" % low))
    if not (math.isfinite(args.lr) and args.lr > 0):
        problems.append("--lr must be a positive number")
    if not 0 < args.validation < 1:
        problems.append("--validation must be between 0 and 1")
    if args.features is not None:
        args.features = [f.strip() for f in args.features.split(",")]
        if not all(args.features) or len(set(args.features)) != len(args.features):
            problems.append("--features must be distinct, non-empty names")
    names = [t.strip() for t in args.time_inputs.split(",") if t.strip()]
    if names == ["none"]:
        names = []
    if len(set(names)) != len(names) or not set(names) <= set(TIME_PERIODS_MS):
        problems.append("--time-inputs must list day and/or week, each once, or none")
    args.time_inputs = names
    if problems:
        p.error("; ".join(problems))
    return args


def split(n, share):
    """How many of the n windows, oldest first, train: the newest share (at least one) is held
    out, so that the model is judged, and the score calibrated, on data that comes after what
    it learned from, as in production."""
    n_val = max(1, round(n * share))
    if n - n_val < 1:
        raise InputError("%d window(s): at least 2 are needed (one to train, one to validate)"
                         % n)
    return n - n_val


def build(args, now):
    """Everything but the store: returns the manifest and the safetensors bytes."""
    layout = Layout(args.features, args.window, args.step_ms)
    marks = Marks(args.feedback, args.detector) if args.feedback else None
    counts = {"true_positive_windows_left_out": 0, "false_positive_windows": 0}
    windows = load_windows(args, layout, marks, counts)
    if windows is None:
        raise InputError("no windows in %s%s" % (
            args.csv or ", ".join(args.windows),
            " for detector %r" % args.detector if args.detector else ""))
    N, T, F = windows.values.shape
    n_train = split(N, args.validation)
    log("%d windows of %d steps and %d features: %d to train, %d to validate"
        % (N, T, F, n_train, N - n_train))

    mean, std = normalization(windows.values[:n_train], windows.observed[:n_train])
    x, y, m = prepare(windows.values[:n_train], windows.observed[:n_train], mean, std)
    x = with_time(x, windows.bucket_ms[:n_train], layout.step_ms, args.time_inputs)
    # A false positive's training windows count --false-positive-weight times: repeated, so
    # that every epoch sees them that often (the normalization above counts them once).
    weighted = int(windows.false_positive[:n_train].sum()) if marks else 0
    if weighted and args.false_positive_weight > 1:
        fp = torch.from_numpy(np.flatnonzero(windows.false_positive[:n_train]))
        repeat = fp.repeat(args.false_positive_weight - 1)
        x, y, m = (torch.cat([x, x[repeat]]), torch.cat([y, y[repeat]]),
                   torch.cat([m, m[repeat]]))
    keep = m.any(dim=1)
    if not bool(keep.any()):
        raise InputError("no training window has data at its newest step")
    val = prepare(windows.values[n_train:], windows.observed[n_train:], mean, std)
    val = (with_time(val[0], windows.bucket_ms[n_train:], layout.step_ms, args.time_inputs),
           val[1], val[2])
    if not bool(val[2].any()):
        raise InputError("no validation window has data at its newest step; use more windows "
                         "or a larger --validation")

    torch.manual_seed(args.seed)
    net = Network(F, args.hidden, args.layers, F + 2 * len(args.time_inputs))
    if args.mode == "stream":
        # Each window's weight as a target: training windows count (a false positive's
        # --false-positive-weight times), held-out ones not.
        target_weight = np.zeros(N, dtype=np.float32)
        target_weight[:n_train] = np.where(windows.false_positive[:n_train],
                                           args.false_positive_weight if marks else 1, 1)
        runs = stream_training.layout(windows, layout.step_ms, mean, std, args.time_inputs,
                                      time_features, target_weight)
        held_out = torch.arange(n_train, N)
        log("stream mode: %d runs of consecutive buckets" % len(runs.idx))
        train_loss, val_loss = stream_training.train(
            net, runs, (runs, held_out, val[1], val[2]), T, args, log, TrainingError)
    else:
        train_loss, val_loss = train(net, (x[keep], y[keep], m[keep]), val, args)
    net.eval()
    weights = state_tensors(net)
    if not all(np.isfinite(w).all() for _, w in weights):
        raise TrainingError("training produced non-finite weights")

    if args.mode == "stream":
        val_pred = stream_training.predict(net, runs, N)[n_train:]
    else:
        val_pred = predict(net, val[0], args.batch_size)
    error_std, score_mean, score_std, threshold, scored = calibrate(val_pred, val[1], val[2])
    # The golden window: the held-out window with the most observed inputs (the first of
    # equals), so that the daemon's check runs on real values rather than an entity's empty
    # start.
    g = int(np.argmax(windows.observed[n_train:, :-1].sum(axis=(1, 2))))
    with torch.no_grad():
        golden_out = net(val[0][g:g + 1])[0]
    golden = {"input": [_floats(row) for row in val[0][g].numpy()],
              "output": _floats(golden_out.numpy()), "tolerance": GOLDEN_TOLERANCE}
    architecture = {"type": "lstm", "layers": args.layers, "hidden": args.hidden,
                    "predicts": "next", "time_inputs": list(args.time_inputs)}
    if args.mode == "stream":
        # Written only for stream models: a daemon from before modes refuses the key, and
        # should refuse a model it would run the wrong way, not a windowed one.
        architecture["mode"] = "stream"
        # The daemon warms each state up again this often: no state runs longer than the
        # segments trained here (docs/models.md, "Modes").
        architecture["rewarm_every"] = stream_training.CHUNKS * (T - 1)
        step_in, step_out = stream_training.golden_steps(net, val[0][g], min(8, T - 1))
        golden["step_inputs"] = [_floats(row) for row in step_in]
        golden["step_outputs"] = [_floats(row) for row in step_out]

    blob = safetensors_io.encode(weights, metadata={"format": "pt"})
    manifest = {
        "format": 1,
        "model": args.model,
        "version": args.version,
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "features": list(layout.features),
        "window": T,
        "step_ms": layout.step_ms,
        "normalization": {"mean": _floats(mean), "std": _floats(std)},
        "architecture": architecture,
        "calibration": {"error_std": _floats(error_std), "score_mean": score_mean,
                        "score_std": score_std, "threshold": threshold},
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "golden": golden,
        "training": {
            "windows": N, "train_windows": n_train, "validation_windows": N - n_train,
            "scored_validation_windows": scored, "epochs": args.epochs,
            "train_loss": train_loss, "validation_loss": val_loss,
            "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "first_bucket_ms": int(windows.bucket_ms[0]),
            "last_bucket_ms": int(windows.bucket_ms[-1]),
            "inputs": [os.path.basename(p) for p in ([args.csv] if args.csv else args.windows)],
        },
    }
    if args.mode == "stream":
        manifest["training"]["stream"] = {
            "runs": len(runs.idx), "chunk_steps": T - 1,
            "chunks_per_segment": stream_training.CHUNKS,
            "segments_per_batch": stream_training.SEGMENTS_PER_BATCH}
    if args.detector:
        manifest["training"]["detector"] = args.detector
    if marks is not None:
        manifest["training"]["feedback"] = {
            "marks": len(marks.marks),
            "inputs": [os.path.basename(p) for p in args.feedback],
            "true_positive_windows_left_out": counts["true_positive_windows_left_out"],
            "false_positive_windows": counts["false_positive_windows"],
            "false_positive_windows_weighted": weighted,
            "false_positive_weight": args.false_positive_weight,
        }
    return manifest, blob


def _floats(array):
    """float32 values as JSON numbers that read back as exactly the same float32."""
    return [float(v) for v in np.asarray(array, dtype=np.float32).ravel()]


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    def stop(signum, _frame):
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    now = datetime.datetime.now(datetime.timezone.utc)
    args.version = args.version or now.strftime("%Y%m%dT%H%M%SZ")
    try:
        if not args.dry_run:
            refuse_existing(args.store, args.model, args.version)
        manifest, blob = build(args, now)
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        if args.dry_run:
            sys.stdout.write(text)
            return 0
        # Publishing takes milliseconds: let it finish, or fail and clean up, rather than be
        # cut short by a signal between two of its steps.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        path = publish(args.store, args.model, manifest["version"],
                       [("model.safetensors", blob), ("manifest.json", text.encode())])
    except InputError as e:
        log("error: %s" % e)
        return 2
    except (OSError, TrainingError) as e:
        log("error: %s" % e)
        return 1
    except Stopped as e:
        log("stopped by %s; nothing was written" % e)
        return 1
    log("wrote %s; CURRENT names it (threshold %.4g)"
        % (path, manifest["calibration"]["threshold"]))
    print(manifest["version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

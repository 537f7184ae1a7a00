#!/usr/bin/python3
"""Scoring, end to end: logs through the Kafka mock cluster, windows exported while the
detector has no model, the reference trainer trained on that export, the model picked up on
SIGHUP, and every window after that scored. Each exported score and likelihood is recomputed
here from the published model with torch (docs/models.md, docs/scoring.md); the injected
incident must score highest; a corrupt version published later must be noticed by the
store's watcher and refused while the serving one stays; and the group's offsets must be committed to the end once every bucket has
been scored.

Skips (77) without kcat or torch.
"""

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, wait_for  # noqa: E402

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: torch or numpy is not installed")
    sys.exit(77)

SOURCE = os.environ.get("AD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "train"))
import safetensors_io  # noqa: E402

STEP_S = 10
T = 8
ENTITIES = ["api-%d" % i for i in range(6)]
INCIDENT = ("api-3", 85)  # entity and bucket (counted from t0) of the injected incident
# docs/scoring.md's constants (detect/surprise.h, detect/seasonal.h).
SURPRISE_SHORT, SURPRISE_PRIOR, SURPRISE_LONG, SURPRISE_FLOOR = 6, 32, 1000, 0.05
GATE_BIN, GATE_BINS, GATE_Q, GATE_K, GATE_MIN, GATE_KEEP = 0.25, 64, 0.99, 1.5, 50, 2000
SEASONAL_SLOTS, SEASONAL_ALPHA, SEASONAL_SCALE, SEASONAL_FAR = 48, 0.3, 1000, 50.0
RECUR_DAYS, RECUR_NEED, RECUR_SHARE = 3, 2, 0.5

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 20s
kafka:
  brokers: "{brokers}"
  group_id: {group}
  properties:
    auto.commit.interval.ms: 200
sources:
  - name: app
    kafka:
      topics: [logs]
      time: {{path: ts, format: unix_ms, max_past: 2h}}
      labels: {{instance: instance}}
      features:
        requests: count
        errors: count_if status >= 500
detectors:
  - name: api
    keys: [instance]
    features: [app.requests, app.errors]
    step: {step}s
    window: {window}s
    allowed_lateness: 0s
    source_idle_timeout: 1h
    export_path: {export}
scoring:
  backend: cpu
  max_batch: 4
model_store: {{path: {store}}}
"""


def events_for(t0_ms, buckets, rng):
    """A daily-like cycle of requests per instance, a few errors, and one incident."""
    lines = []
    for b in buckets:
        for e, instance in enumerate(ENTITIES):
            n = int(8 + 4 * math.sin(2 * math.pi * (b + e) / 12) + rng.randrange(0, 2))
            errors = 1 if rng.random() < 0.2 else 0
            if (instance, b) == INCIDENT:
                n, errors = 40, 30
            for i in range(n):
                t = t0_ms + b * STEP_S * 1000 + rng.randrange(0, STEP_S * 1000)
                lines.append((t, instance, json.dumps({
                    "ts": t, "instance": instance, "status": 503 if i < errors else 200})))
    lines.sort()
    return [(key, text) for _, key, text in lines]


def exported(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def load_model(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    st = safetensors_io.read(os.path.join(folder, "model.safetensors"))
    tensors = {name: st.tensor(name) for name in st.entries}
    arch = manifest["architecture"]
    F = len(manifest["features"])
    inputs = F + 2 * len(arch.get("time_inputs", []))
    lstm = torch.nn.LSTM(inputs, arch["hidden"], arch["layers"], batch_first=True)
    head = torch.nn.Linear(arch["hidden"], F)
    state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    lstm.load_state_dict({k[len("lstm."):]: v for k, v in state.items() if k.startswith("lstm.")})
    head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
    return manifest, lstm, head


def time_inputs_here(manifest, bucket_start_ms, steps):
    """docs/models.md, "Time inputs": sin and cos of the phase of each period (UTC; a week
    starts on Monday) at each input step's bucket start; [steps][2K]."""
    out = []
    for t in range(steps):
        start = bucket_start_ms - (steps - t) * manifest["step_ms"]
        row = []
        for name in manifest["architecture"].get("time_inputs", []):
            period, offset = {"day": (86400000, 0), "week": (7 * 86400000, 3 * 86400000)}[name]
            angle = 2 * math.pi * ((start + offset) % period) / period
            row += [math.sin(angle), math.cos(angle)]
        out.append(row)
    return np.array(out).reshape(steps, -1)


def score_here(manifest, lstm, head, row):
    """docs/models.md, "The score", in float64 around torch's float32 forward pass. row holds
    the window's values, mask and newest bucket's start (bucket_start_ms)."""
    mean = np.array(manifest["normalization"]["mean"])
    std = np.array(manifest["normalization"]["std"])
    err_std = np.array(manifest["calibration"]["error_std"])
    values = np.array([[np.nan if v is None else v for v in step] for step in row["values"]])
    x = (values - mean) / std
    x = np.where(np.isfinite(x), x, 0.0)
    inputs = np.concatenate(
        [x[:-1], time_inputs_here(manifest, row["bucket_start_ms"], len(x) - 1)], axis=1)
    with torch.no_grad():
        out, _ = lstm(torch.tensor(inputs[None], dtype=torch.float32))
        predicted = head(out[:, -1, :]).double().numpy()[0]
    seen = np.array(row["mask"][-1]) == 1
    r = ((x[-1] - predicted) / err_std)[seen]
    return math.sqrt(float(np.mean(r * r)))


def surprise_of_z(z):
    """docs/scoring.md: -log10 of the standard normal upper tail."""
    if z < 37.0:
        return -math.log10(0.5 * math.erfc(z / math.sqrt(2.0)))
    return (0.5 * z * z + math.log(z * math.sqrt(2 * math.pi))
            - math.log(1 - 1 / z ** 2 + 3 / z ** 4)) / math.log(10)


class Surprise:
    """docs/scoring.md, "From score to surprise": one stream of one entity. The gate's
    histogram is kept in single precision, as the daemon keeps it."""

    def __init__(self, mean, std):
        self.n, self.seen, self.short = 0, 0, 0.0
        self.mean, self.var = mean, std * std
        self.floor = max(SURPRISE_FLOOR * std, 1e-6)
        self.hist = np.zeros(GATE_BINS + 1, dtype=np.float32)
        self.total = np.float32(0)

    def bar(self):
        need, above = (1.0 - GATE_Q) * float(self.total), 0.0
        for b in range(GATE_BINS, -1, -1):
            c = float(self.hist[b])
            if c > 0 and above + c >= need:
                return GATE_K * (b + 1 - (need - above) / c) * GATE_BIN
            above += c
        return 0.0

    def update(self, score):
        """Returns (surprise, gated surprise)."""
        self.n += 1
        self.short += (score - self.short) / min(self.n, SURPRISE_SHORT)
        sd = math.sqrt(self.var)
        z = (self.short - self.mean) / (sd if sd > self.floor else self.floor)
        s = max(surprise_of_z(z), 0.0)
        w = max(1.0 / (self.n + SURPRISE_PRIOR), 1.0 / SURPRISE_LONG)
        d = self.short - self.mean
        self.mean += w * d
        self.var = (1 - w) * (self.var + w * d * d)
        bar = self.bar() if self.seen >= GATE_MIN else 0.0
        keep = np.float32(1.0) - np.float32(1.0) / np.float32(GATE_KEEP)
        self.hist *= keep
        self.total = self.total * keep + np.float32(1.0)
        self.hist[min(int(math.floor(s / GATE_BIN)), GATE_BINS)] += np.float32(1.0)
        self.seen += 1
        return s, (s if s >= bar else 0.0)


class Seasonal:
    """docs/scoring.md, "The seasonal baseline": one entity, F features, single precision."""

    def __init__(self, features, step_ms):
        self.slots = max(1, min(SEASONAL_SLOTS, 86400000 // step_ms))
        self.profile = np.full((features, self.slots), np.nan, dtype=np.float32)
        self.scale = np.full(features, np.nan, dtype=np.float32)
        self.seen = [0] * features

    def update(self, bucket_ms, values, observed):
        slot = (bucket_ms % 86400000) * self.slots // 86400000
        total, scored = 0.0, 0
        for f, (x, o) in enumerate(zip(values, observed)):
            if not o or x is None or not math.isfinite(x):
                continue
            x = np.float32(x)
            p = self.profile[f, slot]
            if np.isnan(p):
                self.profile[f, slot] = x
                continue
            r = abs(float(x) - float(p))
            if np.isnan(self.scale[f]):
                self.scale[f] = np.float32(r)
            self.seen[f] += 1
            sc = float(self.scale[f])
            z = r / sc if sc > 0 else (0.0 if r == 0 else SEASONAL_FAR)
            self.scale[f] = np.float32(sc + (r - sc) / min(self.seen[f], SEASONAL_SCALE))
            self.profile[f, slot] = np.float32(float(p) + SEASONAL_ALPHA * (float(x) - float(p)))
            total += z * z
            scored += 1
        return math.sqrt(total / scored) if scored else float("nan")


class Recurrence:
    """docs/scoring.md, "Recurring surprises": per slot of the day, the days with an anomalous
    surprise and the largest of them (over the last RECUR_DAYS days)."""

    def __init__(self, step_ms):
        self.slots = max(1, min(SEASONAL_SLOTS, 86400000 // step_ms))
        self.days = {}  # slot -> {day: surprise}

    def seen(self, bucket_ms, surprise):
        day, slot = bucket_ms // 86400000, (bucket_ms % 86400000) * self.slots // 86400000
        near = [slot] if self.slots < 3 else [(slot + d) % self.slots for d in (-1, 0, 1)]
        level = {s: max([v for d, v in self.days.get(s, {}).items() if d >= day - RECUR_DAYS]
                        or [0.0]) for s in near}
        before = {d for s in near if level[s] >= RECUR_SHARE * surprise
                  for d in self.days.get(s, {}) if day - RECUR_DAYS <= d < day}
        mine = self.days.setdefault(slot, {})
        mine[day] = max(mine.get(day, 0.0), surprise)
        return len(before) >= RECUR_NEED


class Judge:
    """docs/scoring.md: each window's surprise for its entity, from the LSTM's score and the
    seasonal baseline's."""

    def __init__(self, features, step_ms, threshold=5.0):
        self.features, self.step_ms, self.state = features, step_ms, {}
        self.threshold = threshold

    def window(self, key, bucket_ms, values, observed, score=None, calibration=None):
        """Returns (surprise or None, the stream it came from)."""
        e = self.state.setdefault(key, {"seasonal": Seasonal(self.features, self.step_ms),
                                        "s_seasonal": Surprise(1.0, 1.0), "s_lstm": None,
                                        "recurrence": Recurrence(self.step_ms)})
        seasonal = e["seasonal"].update(bucket_ms, values, observed)
        g_seasonal = g_lstm = None
        if math.isfinite(seasonal):
            g_seasonal = e["s_seasonal"].update(seasonal)[1]
        if score is not None:
            if e["s_lstm"] is None:
                e["s_lstm"] = Surprise(calibration["score_mean"], calibration["score_std"])
            g_lstm = e["s_lstm"].update(score)[1]
        if g_lstm is not None and not (g_seasonal is not None and g_seasonal > g_lstm):
            out, stream = g_lstm, "lstm"
        elif g_seasonal is not None:
            out, stream = g_seasonal, "seasonal"
        else:
            return None, None
        if g_lstm is not None and g_seasonal is not None:
            out = max(out - math.log10(2.0), 0.0)
        if out >= self.threshold and e["recurrence"].seen(bucket_ms, out):
            out = 0.0
        return out, stream


class Scoring(unittest.TestCase):
    def setUp(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")

    def test_train_serve_score(self):
        rng = random.Random(11)
        now_ms = int(time.time() * 1000)
        t0_ms = (now_ms - 3600_000) // (STEP_S * 1000) * (STEP_S * 1000)
        folder = tempfile.mkdtemp(prefix="anomalyd-scoring-")
        self.addCleanup(shutil.rmtree, folder, True)
        export = os.path.join(folder, "windows.jsonl")
        store = os.path.join(folder, "models")
        os.mkdir(store)

        with KafkaMock("logs:1") as kafka:
            group = "it-%d" % rng.randrange(1 << 30)
            config = CONFIG.format(brokers=kafka.bootstrap, group=group, step=STEP_S,
                                   window=STEP_S * T, export=export, store=store)
            with Daemon(config) as d:
                # 1. No model yet: windows flow, unscored, and are exported for training.
                first = events_for(t0_ms, range(0, 60), rng)
                kafka.produce("logs", first)
                wait_for("the first buckets to close",
                         lambda: any(r["bucket_start_ms"] >= t0_ms + 55 * STEP_S * 1000
                                     for r in exported(export)), timeout=90, interval=0.3)
                rows = exported(export)
                self.assertTrue(all("score" not in r for r in rows))
                self.assertEqual(d.metric('anomalyd_windows_unscored_total'
                                          '{detector="api",reason="no_model"}'), len(rows))
                self.assertIn("CURRENT", d.status()["pipeline"]["detectors"]["api"]["model"]
                              ["error"])

                # 2. The reference trainer learns from that export; SIGHUP picks it up.
                trained = subprocess.run(
                    ["/usr/bin/python3", os.path.join(SOURCE, "train", "anomalyd_train.py"),
                     "--windows", export, "--store", store, "--model", "api", "--version", "v1",
                     "--hidden", "16", "--epochs", "30", "--seed", "3", "--threads", "1"],
                    capture_output=True, text=True, timeout=240)
                self.assertEqual(trained.returncode, 0, trained.stderr)
                d.signal(signal.SIGHUP)
                wait_for("the model", lambda: d.find("serving a model"), timeout=20)
                self.assertEqual(d.metric('anomalyd_model_info{detector="api",model="api",'
                                          'version="v1"}'), 1)
                served_from = len(exported(export))

                # 3. Later logs, with an incident, are scored.
                second = events_for(t0_ms, range(60, 100), rng)
                kafka.produce("logs", second)
                # One more event pushes the watermark past the last bucket.
                kafka.produce("logs", [("end", json.dumps({
                    "ts": t0_ms + (100 + T) * STEP_S * 1000, "instance": "api-0",
                    "status": 200}))])
                last_ms = t0_ms + 99 * STEP_S * 1000
                wait_for("the last bucket", lambda: any(
                    r["bucket_start_ms"] >= last_ms for r in exported(export)), timeout=90,
                    interval=0.3)
                rows = exported(export)
                scored = [r for r in rows[served_from:] if "score" in r]
                self.assertGreater(len(scored), 200)
                for r in rows[served_from:]:
                    observed = any(r["mask"][-1])
                    if r["bucket_start_ms"] >= t0_ms + 61 * STEP_S * 1000 and observed:
                        self.assertIn("score", r, "a window after the model came was not scored")
                    if not observed:
                        self.assertNotIn("score", r, "a window without new data was scored")

                manifest, lstm, head = load_model(os.path.join(store, "api", "v1"))
                for r in scored:
                    self.assertEqual(r["model_version"], "v1")
                    want = score_here(manifest, lstm, head, r)
                    self.assertLessEqual(abs(r["score"] - want), 1e-4 * max(1.0, want),
                                         (r["labels"], r["bucket_start_ms"], r["score"], want))
                # Every window with new data is judged, before the model too (the seasonal
                # baseline needs none): the surprises recomputed from the export's own rows.
                judge = Judge(2, STEP_S * 1000)
                for r in rows:
                    if not any(r["mask"][-1]):
                        continue
                    want_s, _ = judge.window(r["labels"]["instance"], r["bucket_start_ms"],
                                             r["values"][-1], r["mask"][-1], r.get("score"),
                                             manifest["calibration"])
                    if want_s is None:
                        self.assertNotIn("surprise", r)
                    else:
                        self.assertLessEqual(abs(r["surprise"] - want_s),
                                             1e-5 * max(1.0, want_s),
                                             (r["labels"], r["bucket_start_ms"]))

                top = max(scored, key=lambda r: r["score"])
                self.assertEqual((top["labels"]["instance"],
                                  (top["bucket_start_ms"] - t0_ms) // (STEP_S * 1000)), INCIDENT)
                self.assertGreater(top["surprise"], 5)
                self.assertGreaterEqual(
                    d.metric('anomalyd_windows_anomalous_total{detector="api"}'), 1)
                self.assertEqual(d.metric('anomalyd_windows_scored_total{detector="api"}'),
                                 len(scored))
                self.assertEqual(d.metric('anomalyd_scoring_backend_info{backend="cpu",device="%s"}'
                                          % d.status()["scoring"]["device"]), 1)
                self.assertGreater(d.metric("anomalyd_scoring_batch_windows_count"), 50)

                # Every bucket up to the last is scored and handed on: the offsets reach the
                # last event, whose bucket is still open.
                total = len(first) + len(second)
                wait_for("the commits", lambda: kafka.committed(group, "logs")[1] == total,
                         timeout=30, interval=0.5)

                # 4. A corrupt version is refused; the serving one stays.
                bad = os.path.join(store, "api", "v2")
                shutil.copytree(os.path.join(store, "api", "v1"), bad)
                with open(os.path.join(bad, "model.safetensors"), "r+b") as f:
                    f.truncate(100)
                with open(os.path.join(store, "api", "CURRENT.tmp"), "w") as f:
                    f.write("v2\n")
                os.rename(os.path.join(store, "api", "CURRENT.tmp"),
                          os.path.join(store, "api", "CURRENT"))
                # No signal: the store's watcher sees CURRENT move (docs/model-store.md).
                wait_for("the refusal", lambda: d.find("a model version was refused; the "
                                                       "serving one stays"), timeout=20)
                self.assertEqual(d.metric('anomalyd_model_load_failures_total{detector="api"}'),
                                 1)
                model = d.status()["pipeline"]["detectors"]["api"]["model"]
                self.assertEqual(model["version"], "v1")
                self.assertIn("v2/model.safetensors", model["error"])

                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

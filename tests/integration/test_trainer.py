#!/usr/bin/python3
"""The reference trainer (train/anomalyd_train.py) end to end: it trains a tiny model on
synthetic windows in the daemon's export format and must write exactly the version folder
docs/models.md specifies, whose weights loaded into a fresh torch module reproduce the golden
output; the same seed must give the same bytes; bad input must be refused with exit status 2
and its file and line named; a failed run must leave the store as it was.

Skips (77) when torch is not importable. Standard library, numpy and torch.
"""

import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("AD_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TRAINER = os.path.join(SOURCE, "train", "anomalyd_train.py")
sys.path.insert(0, os.path.join(SOURCE, "train"))
try:
    import numpy as np
    import torch
    import safetensors_io
except ImportError as e:
    print("skipped: %s" % e)
    sys.exit(77)

FEATURES = ["app.requests", "app.errors", "node.cpu"]
T, F, H = 8, 3, 8
STEP_MS = 10000
FAST = ["--hidden", str(H), "--epochs", "2", "--batch-size", "64", "--threads", "1"]
MANIFEST_KEYS = {"format", "model", "version", "created_at", "features", "window", "step_ms",
                 "normalization", "architecture", "calibration", "weights_sha256", "golden",
                 "training"}


def series(entity, buckets, rng):
    """One entity's buckets: sine-like features with noise, a few cells without data (mask 0,
    the value carried as the daemon's carry fill does) and a rare null."""
    rows, last = [], [0.0] * F
    for b in range(buckets):
        angle = 2 * math.pi * b / 20 + entity
        true = [50 + 20 * math.sin(angle) + rng.gauss(0, 1),
                max(0.0, 2 + math.sin(angle) + rng.gauss(0, 0.3)),
                0.5 + 0.3 * math.cos(angle) + rng.gauss(0, 0.02)]
        mask = [0 if rng.random() < 0.05 else 1 for _ in range(F)]
        values = [round(v, 4) if m else last[f] for f, (v, m) in enumerate(zip(true, mask))]
        if rng.random() < 0.02:
            values[2], mask[2] = None, 0
        last = [v if v is not None else last[f] for f, v in enumerate(values)]
        rows.append((values, mask))
    return rows


def export_lines(detector="checkout", entities=3, buckets=60, features=FEATURES, seed=1):
    """Exported windows as the daemon writes them: per closed bucket, every entity's window of
    the last T buckets (zeros with mask 0 before the entity's first data)."""
    rng = random.Random(seed)
    data = [series(e, buckets, rng) for e in range(entities)]
    empty = ([0] * F, [0] * F)
    lines = []
    for b in range(buckets):
        for e in range(entities):
            rows = [data[e][k] if k >= 0 else empty for k in range(b - T + 1, b + 1)]
            lines.append(json.dumps({
                "detector": detector, "bucket_start_ms": 1795323600000 + b * STEP_MS,
                "step_ms": STEP_MS, "labels": {"service": "checkout", "instance": "c-%d" % e},
                "features": features, "values": [r[0] for r in rows],
                "mask": [r[1] for r in rows]}, separators=(",", ":")))
    return lines


def run_trainer(*args, preexec_fn=None):
    return subprocess.run([TRAINER, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec_fn)


class Network(torch.nn.Module):
    """Built from docs/models.md alone, not from the trainer, so that the two must agree."""

    def __init__(self, features, hidden, layers, inputs):
        super().__init__()
        self.lstm = torch.nn.LSTM(inputs, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, features)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1, :])


def with_time(x, newest_ms, step_ms):
    """docs/models.md, "Time inputs": each input step gets sin and cos of the phase of the day
    and of the week (UTC, weeks from Monday) at its bucket start."""
    steps = x.shape[1]
    rows = []
    for newest in newest_ms:
        row = []
        for t in range(steps):
            start = newest - (steps - t) * step_ms
            day = 2 * math.pi * (start % 86400000) / 86400000
            week = 2 * math.pi * ((start + 3 * 86400000) % (7 * 86400000)) / (7 * 86400000)
            row.append([math.sin(day), math.cos(day), math.sin(week), math.cos(week)])
        rows.append(row)
    return torch.cat([x, torch.tensor(rows, dtype=torch.float32)], dim=2)


def numbers(value):
    """Every number in a JSON value."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


class Trainer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="anomalyd-trainer-")
        cls.export = cls.path("windows.jsonl")
        # Windows of another detector, with other features, in the same file: --detector
        # must leave them out.
        other = export_lines(detector="other", entities=1, buckets=5,
                             features=["x.a", "x.b", "x.c"])
        cls.write(cls.export, other[:2] + export_lines() + other[2:])
        cls.store = cls.path("store")
        cls.result = run_trainer("--windows", cls.export, "--detector", "checkout",
                                 "--store", cls.store, "--model", "checkout",
                                 "--version", "v1", *FAST)

    @classmethod
    def tearDownClass(cls):
        if not os.environ.get("AD_KEEP_TMP"):
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, *names):
        return os.path.join(cls.dir, *names)

    @staticmethod
    def write(path, lines):
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))

    def assertRefused(self, result, status, pattern):
        self.assertEqual(result.returncode, status, result.stderr)
        self.assertRegex(result.stderr, pattern)

    def test_version_folder(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        self.assertEqual(self.result.stdout, "v1\n")
        model_dir = os.path.join(self.store, "checkout")
        self.assertEqual(sorted(os.listdir(model_dir)), ["CURRENT", "v1"])
        with open(os.path.join(model_dir, "CURRENT")) as f:
            self.assertEqual(f.read(), "v1\n")
        version_dir = os.path.join(model_dir, "v1")
        self.assertEqual(sorted(os.listdir(version_dir)), ["manifest.json", "model.safetensors"])
        with open(os.path.join(version_dir, "model.safetensors"), "rb") as f:
            blob = f.read()
        with open(os.path.join(version_dir, "manifest.json")) as f:
            manifest = json.load(f)

        # The weights: exactly the spec's tensors, F32, contiguous, covering the data.
        st = safetensors_io.parse(blob)
        # Inputs: the features, then sin and cos of the time of day and of the week.
        expected = {"lstm.weight_ih_l0": (4 * H, F + 4), "lstm.weight_hh_l0": (4 * H, H),
                    "lstm.bias_ih_l0": (4 * H,), "lstm.bias_hh_l0": (4 * H,),
                    "head.weight": (F, H), "head.bias": (F,)}
        self.assertEqual({n: e.shape for n, e in st.entries.items()}, expected)
        self.assertTrue(all(e.dtype == "F32" for e in st.entries.values()))
        self.assertEqual(st.data_start % 8, 0)
        end = 0
        for e in sorted(st.entries.values(), key=lambda e: e.begin):
            self.assertEqual(e.begin, end)
            end = e.end
        self.assertEqual(st.data_start + end, len(blob))

        # The manifest: exactly the spec's keys, types and lengths.
        self.assertEqual(set(manifest), MANIFEST_KEYS)
        self.assertEqual(manifest["format"], 1)
        self.assertEqual((manifest["model"], manifest["version"]), ("checkout", "v1"))
        self.assertRegex(manifest["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(manifest["features"], FEATURES)
        self.assertEqual((manifest["window"], manifest["step_ms"]), (T, STEP_MS))
        norm = manifest["normalization"]
        self.assertEqual(set(norm), {"mean", "std"})
        self.assertEqual([len(norm["mean"]), len(norm["std"])], [F, F])
        self.assertTrue(all(s > 0 for s in norm["std"]))
        self.assertAlmostEqual(norm["mean"][0], 50, delta=3)
        self.assertEqual(manifest["architecture"],
                         {"type": "lstm", "layers": 1, "hidden": H, "predicts": "next",
                          "time_inputs": ["day", "week"]})
        cal = manifest["calibration"]
        self.assertEqual(set(cal), {"error_std", "score_mean", "score_std", "threshold"})
        self.assertEqual(len(cal["error_std"]), F)
        self.assertTrue(all(s > 0 for s in cal["error_std"]))
        self.assertGreater(cal["threshold"], cal["score_mean"])
        self.assertEqual(manifest["weights_sha256"], hashlib.sha256(blob).hexdigest())
        golden = manifest["golden"]
        self.assertEqual(set(golden), {"input", "output", "tolerance"})
        self.assertEqual([len(row) for row in golden["input"]], [F + 4] * (T - 1))
        # The golden input's time columns are the phases of the input steps' bucket starts.
        first = manifest["training"]["first_bucket_ms"]
        for row in golden["input"]:
            for k in (F, F + 2):
                self.assertAlmostEqual(row[k] ** 2 + row[k + 1] ** 2, 1.0, places=5)
        self.assertGreaterEqual(first, 0)
        self.assertEqual(len(golden["output"]), F)
        self.assertEqual(golden["tolerance"], 1e-4)
        training = manifest["training"]
        self.assertEqual(training["windows"], 60 * 3)
        self.assertEqual(training["epochs"], 2)
        self.assertIsInstance(training["validation_loss"], float)
        for n in numbers(manifest):
            self.assertTrue(math.isfinite(n), n)

        # The weights in a module built from the spec reproduce the golden output.
        net = Network(F, H, 1, F + 4)
        net.load_state_dict({n: torch.from_numpy(st.tensor(n)) for n in st.entries},
                            strict=True)
        with torch.no_grad():
            out = net(torch.tensor([golden["input"]], dtype=torch.float32))[0].tolist()
        for a, b in zip(out, golden["output"]):
            self.assertLessEqual(abs(a - b), golden["tolerance"] * max(1.0, abs(b)))

        # The calibration is the daemon's score (models.md) on the newest 20 % of the windows,
        # recomputed here from the export: RMS error per feature, then the scores' mean, std
        # and, with fewer than 1000 windows, threshold = mean + 4 std.
        held_out = [json.loads(line) for line in export_lines()][-36:]
        values = np.array([w["values"] for w in held_out], dtype=np.float32)
        observed = np.array([w["mask"] for w in held_out], dtype=bool) & np.isfinite(values)
        x = (values - np.float32(norm["mean"])) / np.float32(norm["std"])
        x = np.where(np.isfinite(x), x, np.float32(0))
        inputs = with_time(torch.from_numpy(x[:, :-1]), [w["bucket_start_ms"] for w in held_out],
                           STEP_MS)
        with torch.no_grad():
            err = (net(inputs).numpy() - x[:, -1]).astype(np.float64)
        seen = observed[:, -1]
        rms = np.sqrt((np.where(seen, err, 0) ** 2).sum(axis=0) / seen.sum(axis=0))
        np.testing.assert_allclose(cal["error_std"], rms, rtol=1e-4)
        r2 = np.where(seen, (err / np.float32(cal["error_std"])) ** 2, 0)
        scores = np.sqrt(r2.sum(axis=1) / seen.sum(axis=1))
        np.testing.assert_allclose([cal["score_mean"], cal["score_std"], cal["threshold"]],
                                   [scores.mean(), scores.std(), scores.mean() + 4 * scores.std()],
                                   rtol=1e-4)
        self.assertLess(cal["score_mean"], 1.1)  # about 1 on held-out windows, by construction

    def test_stream_model(self):
        """--mode stream: the manifest says so, the golden steps reproduce with the state
        carried, and the calibration is the score of each held-out window predicted by reading
        its entity's run of buckets from the start (docs/training.md, "Stream models")."""
        store = self.path("stream-store")
        result = run_trainer("--windows", self.export, "--detector", "checkout", "--store",
                             store, "--model", "checkout", "--version", "s1", "--mode", "stream",
                             *FAST)
        self.assertEqual(result.returncode, 0, result.stderr)
        version_dir = os.path.join(store, "checkout", "s1")
        with open(os.path.join(version_dir, "model.safetensors"), "rb") as f:
            st = safetensors_io.parse(f.read())
        with open(os.path.join(version_dir, "manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["architecture"]["mode"], "stream")
        # No state runs longer than the segments trained on: 8 chunks of T - 1 steps.
        self.assertEqual(manifest["architecture"]["rewarm_every"], 8 * (T - 1))
        self.assertEqual(manifest["training"]["stream"]["runs"], 3)
        golden = manifest["golden"]
        self.assertEqual(set(golden), {"input", "output", "tolerance", "step_inputs",
                                       "step_outputs"})
        self.assertEqual(len(golden["step_inputs"]), len(golden["step_outputs"]))
        self.assertGreaterEqual(len(golden["step_inputs"]), 1)
        net = Network(F, H, 1, F + 4)
        net.load_state_dict({n: torch.from_numpy(st.tensor(n)) for n in st.entries},
                            strict=True)
        tol = golden["tolerance"]
        with torch.no_grad():
            _, state = net.lstm(torch.tensor([golden["input"]], dtype=torch.float32))
            for row, want in zip(golden["step_inputs"], golden["step_outputs"]):
                out, state = net.lstm(torch.tensor([[row]], dtype=torch.float32), state)
                got = net.head(out[0, -1]).tolist()
                for a, b in zip(got, want):
                    self.assertLessEqual(abs(a - b), tol * max(1.0, abs(b)))

        norm, cal = manifest["normalization"], manifest["calibration"]
        windows = [json.loads(line) for line in export_lines()]
        errors, seen = [], []
        for e in range(3):
            mine = [w for w in windows if w["labels"]["instance"] == "c-%d" % e]
            rows = mine[0]["values"] + [w["values"][-1] for w in mine[1:]]
            masks = mine[0]["mask"] + [w["mask"][-1] for w in mine[1:]]
            values = np.array([[math.nan if v is None else v for v in r] for r in rows],
                              dtype=np.float32)
            x = (values - np.float32(norm["mean"])) / np.float32(norm["std"])
            x = np.where(np.isfinite(x), x, np.float32(0))
            newest = mine[0]["bucket_start_ms"] + (len(rows) - T) * STEP_MS
            inputs = with_time(torch.from_numpy(x[None, :-1]), [newest], STEP_MS)
            with torch.no_grad():
                pred = net.head(net.lstm(inputs)[0][0]).numpy()
            # The newest 20 % of the windows are held out: the last 12 buckets of each entity.
            for j in range(len(mine) - 12, len(mine)):
                row = T - 1 + j
                errors.append(pred[row - 1] - x[row])
                seen.append(np.array(masks[row], dtype=bool) & np.isfinite(values[row]))
        err, seen = np.array(errors, dtype=np.float64), np.array(seen)
        rms = np.sqrt((np.where(seen, err, 0) ** 2).sum(axis=0) / seen.sum(axis=0))
        np.testing.assert_allclose(cal["error_std"], rms, rtol=1e-4)

    def test_same_seed_same_bytes(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        store = self.path("again-store")
        again = run_trainer("--windows", self.export, "--detector", "checkout", "--store",
                            store, "--model", "checkout", "--version", "v1-again", *FAST)
        self.assertEqual(again.returncode, 0, again.stderr)
        files = [os.path.join(self.store, "checkout", "v1", "model.safetensors"),
                 os.path.join(store, "checkout", "v1-again", "model.safetensors")]
        blobs = []
        for name in files:
            with open(name, "rb") as f:
                blobs.append(f.read())
        self.assertEqual(blobs[0], blobs[1])

    def test_bad_input(self):
        lines = export_lines(buckets=4)
        bad_json = self.path("bad.jsonl")
        self.write(bad_json, lines[:2] + ['{"detector": "checkout", "values": [[1,'] + lines[2:])
        self.assertRefused(run_trainer("--windows", bad_json, "--model", "m", "--dry-run"),
                           2, re.escape(bad_json) + r":3: not valid JSON")

        mixed = self.path("mixed.jsonl")
        self.write(mixed, lines[:3] + export_lines(buckets=1, features=["a.b", "a.c", "a.d"]))
        self.assertRefused(run_trainer("--windows", mixed, "--model", "m", "--dry-run"),
                           2, re.escape(mixed) + r":4: features is .*, but " +
                           re.escape(mixed) + ":1 says")

        # Without --detector, windows of two detectors are an error, not a mix.
        self.assertRefused(run_trainer("--windows", self.export, "--model", "m", "--dry-run"),
                           2, re.escape(self.export) + r":3: a window of detector 'checkout', "
                           "but " + re.escape(self.export) + ":1 is of 'other'")

        empty = self.path("empty.jsonl")
        self.write(empty, [])
        self.assertRefused(run_trainer("--windows", empty, "--model", "m", "--dry-run"),
                           2, "no windows in " + re.escape(empty))

    def test_csv(self):
        rng = random.Random(2)
        lines = ["time_ms,service,app.requests,node.cpu"]
        for b in range(40):
            for svc in ("a", "b"):
                if svc == "b" and b % 13 == 5:
                    continue  # a missing bucket: filled, with mask 0
                cpu = "" if b % 7 == 3 else "%.3f" % (0.5 + 0.2 * math.sin(b / 3) +
                                                      rng.gauss(0, 0.01))
                lines.append("%d,%s,%.2f,%s" % (1795323600000 + b * 5000 + 17, svc,
                                                10 + 3 * math.sin(b / 4), cpu))
        csv_path = self.path("rows.csv")
        self.write(csv_path, lines)
        store = self.path("csv-store")
        result = run_trainer("--csv", csv_path, "--window", "6", "--step-ms", "5000",
                             "--store", store, "--model", "api", "--version", "c1", *FAST)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(store, "api", "c1", "manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["features"], ["app.requests", "node.cpu"])
        self.assertEqual((manifest["window"], manifest["step_ms"]), (6, 5000))
        self.assertEqual(manifest["training"]["windows"], 80 - 3)
        self.assertEqual(len(manifest["golden"]["input"]), 5)

    def test_csv_rows_in_one_bucket_and_out_of_order(self):
        # Several rows of one entity and bucket combine as the detector aggregates the
        # feature (sum for counts, last for gauges), whatever order they come in, as the
        # replay combines them; before, a second row was refused.
        import anomalyd_train
        rows = [(b, t, 2.0 + b, 0.1 * b + t / 10000.0)
                for b in range(12) for t in (100, 2500, 4900)]
        random.Random(4).shuffle(rows)
        lines = ["time_ms,service,app.requests,node.cpu"]
        lines += ["%d,a,%g,%g" % (1795323600000 + b * 5000 + t, r, c) for b, t, r, c in rows]
        csv_path = self.path("rows-in-one-bucket.csv")
        self.write(csv_path, lines)
        layout = anomalyd_train.Layout(None, 4, 5000)
        windows = list(anomalyd_train.read_csv(csv_path, layout, "carry",
                                               "last,app.requests=sum"))
        self.assertEqual(len(windows), 12)
        newest = windows[-1]
        self.assertAlmostEqual(float(newest.values[-1][0]), 3 * (2.0 + 11), places=4)
        self.assertAlmostEqual(float(newest.values[-1][1]), 0.1 * 11 + 0.49, places=4)
        self.assertTrue(newest.mask[-1].all())
        # mean averages the rows; an unknown aggregation is a usage error.
        windows = list(anomalyd_train.read_csv(csv_path, layout, "carry", "mean"))
        self.assertAlmostEqual(float(windows[-1].values[-1][0]), 2.0 + 11, places=4)
        result = run_trainer("--csv", csv_path, "--window", "4", "--step-ms", "5000",
                             "--aggregate", "median", "--model", "m", "--dry-run")
        self.assertRefused(result, 2, "--aggregate: 'median' is not one of")

    def test_failed_run_leaves_the_store_as_it_was(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        store = self.path("failing-store")
        shutil.copytree(self.store, store)
        model_dir = os.path.join(store, "checkout")
        before = sorted(os.listdir(model_dir))

        def small_files():
            # A disk that fills up: writes past 1000 bytes fail with EFBIG (the signal that
            # would kill the process instead is ignored, as it is inherited through exec).
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

        result = run_trainer("--windows", self.export, "--detector", "checkout", "--store",
                             store, "--model", "checkout", "--version", "v2", *FAST,
                             preexec_fn=small_files)
        self.assertRefused(result, 1, "error: .*File too large")
        self.assertEqual(sorted(os.listdir(model_dir)), before)
        with open(os.path.join(model_dir, "CURRENT")) as f:
            self.assertEqual(f.read(), "v1\n")

        exists = run_trainer("--windows", self.export, "--detector", "checkout", "--store",
                             store, "--model", "checkout", "--version", "v1", *FAST)
        self.assertRefused(exists, 2, "already exists")
        self.assertEqual(sorted(os.listdir(model_dir)), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)

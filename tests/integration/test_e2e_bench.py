#!/usr/bin/python3
"""bench/e2e.py on a tiny load (300 entities, T = 8, H = 8, 4 partitions): the benchmark's
driver runs every phase against the real daemon, mock cluster and redis-server, and accounts
for every alert: notified, written by Redis, delivered by Kafka, observed by the delivery
histogram and logged with its latency, each once, and each latency record in one phase; with
a stream model (the new path), whose states warm up once and then step. A
functional check of the driver only: nothing about time is asserted (docs/BENCHMARKS.md has the
figures).

Skips (77) without redis-server or torch.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("AD_BUILD_DIR", "build")
SOURCE = os.environ.get("AD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))

try:
    import torch  # noqa: F401  (the trainer needs it)
except ImportError:
    print("skipped: torch is not installed")
    sys.exit(77)


class E2EBench(unittest.TestCase):
    def setUp(self):
        if not shutil.which("redis-server"):
            self.skipTest("redis-server is not installed")

    def test_tiny_run_accounts_for_every_alert(self):
        folder = tempfile.mkdtemp(prefix="anomalyd-e2e-smoke-")
        self.addCleanup(shutil.rmtree, folder, True)
        out = os.path.join(folder, "result.json")
        r = subprocess.run(
            ["/usr/bin/python3", os.path.join(SOURCE, "bench", "e2e.py"), "--build", BUILD,
             "--entities", "300", "--window", "8", "--hidden", "8", "--partitions", "4",
             "--backlog-buckets", "4", "--live-buckets", "3", "--pace", "0.5",
             "--incident-share", "0.1", "--modes", "stream", "--json", out],
            capture_output=True, text=True, timeout=280)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(out) as f:
            (res,) = json.load(f)
        alerts = res["alerts"]
        self.assertGreater(alerts["notified"], 0, r.stdout)
        for key in ("redis_written", "kafka_delivered", "latency_histogram_count",
                    "latency_records"):
            self.assertEqual(alerts[key], alerts["notified"], key)
        lat = res["latency"]
        self.assertEqual(lat["backlog"]["n"] + lat["live"]["n"], alerts["latency_records"])
        self.assertEqual(lat["live_from_next_bucket"]["n"], lat["live"]["n"])
        # Every event produced in a phase was read (nothing fell out of the mock's retention),
        # and taken: none refused or late, every window scored.
        self.assertEqual(res["history"]["events"], res["history"]["generator"]["events"])
        for key in ("refused_events", "late_events", "unscored_no_data", "unscored_failed"):
            self.assertEqual(res["windows"][key], 0, key)
        # The backlog scores its 4 buckets and the last one of the history, which its first
        # events close.
        self.assertEqual(res["backlog"]["windows"], 5 * 300)
        # The stream model warmed each entity up when it was swapped in, and again once in
        # rewarm_every (56) buckets; every other window stepped.
        w = res["windows"]
        self.assertEqual(res["mode"], "stream")
        self.assertGreaterEqual(w["stream_warm_ups"], 300)
        self.assertGreater(w["stream_steps"], 4 * w["stream_warm_ups"])
        self.assertEqual(w["stream_steps"] + w["stream_warm_ups"], w["scored"])
        self.assertIn("p99/800 ms", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""Watermark alignment (docs/windows.md, "Partitions far ahead"): a partition whose backlog runs
far ahead of another partition's is paused until the other catches up, so that no entity has
to hold more open buckets than it may, and no event is refused as too far. One partition's
40 buckets are read first; the other's come later; every event of both must land in its
window, exactly.

Skips (77) without kcat. Standard library only.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, wait_for  # noqa: E402

STEP_S = 10
BUCKETS = 40

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 20s
kafka:
  brokers: "{brokers}"
  group_id: align-{suffix}
  properties:
    auto.commit.interval.ms: 200
sources:
  - name: app
    kafka:
      topics: [logs]
      time: {{path: ts, format: unix_ms, max_past: 2h}}
      labels: {{instance: instance}}
      features: {{requests: count}}
detectors:
  - name: api
    keys: [instance]
    features: [app.requests]
    step: {step}s
    window: {window}s
    allowed_lateness: 0s
    source_idle_timeout: 1h
    export_path: {export}
model_store: {{path: models}}
"""


def events(t0_ms, instance, first, last):
    """1 + (b % 3) events in each bucket b of [first, last)."""
    out = []
    for b in range(first, last):
        for i in range(1 + b % 3):
            t = t0_ms + b * STEP_S * 1000 + 1000 * (i + 1)
            out.append((instance, json.dumps({"ts": t, "instance": instance})))
    return out


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


class Alignment(unittest.TestCase):
    def setUp(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")

    def test_a_partition_far_ahead_waits_for_the_other(self):
        now_ms = int(time.time() * 1000)
        t0_ms = (now_ms - 3600_000) // (STEP_S * 1000) * (STEP_S * 1000)
        folder = tempfile.mkdtemp(prefix="anomalyd-align-")
        self.addCleanup(shutil.rmtree, folder, True)
        export = os.path.join(folder, "api.jsonl")
        with KafkaMock("logs:2") as kafka:
            fast = events(t0_ms, "fast", 0, BUCKETS)
            kafka.produce("logs", fast, partition=0)
            config = CONFIG.format(brokers=kafka.bootstrap, suffix=now_ms, step=STEP_S,
                                   window=STEP_S * 4, export=export)
            with Daemon(config) as d:
                # Partition 1 has nothing yet and holds the grid: partition 0 runs ahead
                # until it is paused.
                wait_for("the pause", lambda: d.metric(
                    'anomalyd_kafka_partitions_ahead{source="app"}') == 1, timeout=60,
                    interval=0.2)
                time.sleep(1)
                self.assertEqual(d.status()["pipeline"]["detectors"]["api"]["refused_too_far"],
                                 0)
                # The slow partition's events come; both move on together.
                slow = events(t0_ms, "slow", 0, BUCKETS)
                closing = [("slow", json.dumps({"ts": t0_ms + (BUCKETS + 1) * STEP_S * 1000,
                                                "instance": "slow"})),
                           ("fast", json.dumps({"ts": t0_ms + (BUCKETS + 1) * STEP_S * 1000,
                                                "instance": "fast"}))]
                kafka.produce("logs", slow + closing[:1], partition=1)
                kafka.produce("logs", closing[1:], partition=0)
                last = t0_ms + (BUCKETS - 1) * STEP_S * 1000

                def all_closed():
                    rows = read_rows(export)
                    return rows if {(r["labels"]["instance"], r["bucket_start_ms"])
                                    for r in rows} >= {("fast", last), ("slow", last)} else None

                rows = wait_for("every bucket of both", all_closed, timeout=90, interval=0.3)
                status = d.status()["pipeline"]["detectors"]["api"]
                self.assertEqual(status["refused_too_far"], 0)
                self.assertEqual(status["late"], 0)
                self.assertGreaterEqual(
                    d.metric('anomalyd_kafka_partition_pauses_total{source="app"}'), 1)
                self.assertEqual(d.metric('anomalyd_events_total{source="app",result="accepted"}'),
                                 len(fast) + len(slow) + 2)
                for instance in ("fast", "slow"):
                    counts = {r["bucket_start_ms"]: r["values"][-1][0] for r in rows
                              if r["labels"]["instance"] == instance}
                    for b in range(BUCKETS):
                        self.assertEqual(counts.get(t0_ms + b * STEP_S * 1000), 1 + b % 3,
                                         (instance, b))
                self.assertEqual(d.metric('anomalyd_kafka_partitions_ahead{source="app"}'), 0)
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

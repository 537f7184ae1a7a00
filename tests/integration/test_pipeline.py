#!/usr/bin/python3
"""The whole data path of one detector with both kinds of source: JSON logs from the Kafka mock
cluster and a series from a real Prometheus (loaded with known values through promtool), for
the same entity. The daemon's exported windows must hold the Kafka count and the Prometheus
value of each bucket in the same cell. Then a SIGHUP with a config that adds a detector
rebuilds the pipeline, and the new detector hands on windows too.

Skips (77) without kcat, prometheus or promtool. Standard library only.
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
from harness import Daemon, KafkaMock, Prometheus, wait_for  # noqa: E402

STEP = 10
T = 6

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 20s
kafka:
  brokers: "{brokers}"
  group_id: pipeline-{suffix}
  # The reload's consumer joins once the old one has left: the mock cluster then waits
  # session.timeout.ms - 1 s before it assigns (docs/testing-kafka-mock.md).
  properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
sources:
  - name: app
    kafka:
      topics: [logs]
      time: {{path: ts, format: unix_ms, max_past: 1h}}
      labels: {{service: service, instance: instance}}
      features: {{requests: count}}
  - name: node
    prometheus:
      url: {prometheus}
      queries: {{cpu: demo_cpu}}
      delay: 5s
      timeout: 2s
detectors:
  - name: api
    keys: [service, instance]
    features: [app.requests, node.cpu]
    step: {step}s
    window: {window}s
    allowed_lateness: 0s
    source_idle_timeout: 5s
    export_path: {export}
{extra}model_store: {{path: models}}
"""

SECOND_DETECTOR = """\
  - name: cpu_only
    keys: [service, instance]
    features: [node.cpu]
    step: {step}s
    window: {window}s
    allowed_lateness: 0s
    source_idle_timeout: 5s
    export_path: {export2}
"""


def cpu_at(t):
    """The known value of demo_cpu at grid time t (seconds)."""
    return float((t // STEP) % 100)


def openmetrics(now):
    first = (now - 1200) // STEP * STEP
    lines = ["# TYPE demo_cpu gauge"]
    for t in range(first, now + 600, STEP):
        lines.append('demo_cpu{service="checkout",instance="c-1"} %s %d' % (cpu_at(t), t))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


class Pipeline(unittest.TestCase):
    def setUp(self):
        for tool in ("kcat", "prometheus", "promtool"):
            if not shutil.which(tool):
                self.skipTest(tool + " is not installed")

    def test_kafka_and_prometheus_in_one_cell_then_reload(self):
        now = int(time.time())
        folder = tempfile.mkdtemp(prefix="anomalyd-pipeline-")
        self.addCleanup(shutil.rmtree, folder, True)
        export, export2 = os.path.join(folder, "api.jsonl"), os.path.join(folder, "cpu.jsonl")

        # Kafka events of one entity in buckets 20 to 50 s ago: 1, 2, 3, 4 events.
        counts = {}
        events = []
        last = (now - 20) // STEP * STEP
        for k, bucket_start in enumerate(range(last - 3 * STEP, last + 1, STEP)):
            for i in range(k + 1):
                t_ms = bucket_start * 1000 + 1000 + i * 2000
                events.append(("c-1", json.dumps({"ts": t_ms, "service": "checkout",
                                                  "instance": "c-1"})))
            counts[bucket_start * 1000] = k + 1

        with Prometheus(openmetrics(now)) as prom, KafkaMock("logs:2") as kafka:
            kafka.produce("logs", events)
            fields = dict(brokers=kafka.bootstrap, suffix=now, prometheus=prom.url, step=STEP,
                          window=STEP * T, export=export, export2=export2)
            with Daemon(CONFIG.format(extra="", **fields)) as d:
                newest = max(counts)

                def windows_done():
                    rows = read_rows(export)
                    return rows if any(r["bucket_start_ms"] == newest for r in rows) else None

                rows = wait_for("the windows of the last Kafka bucket", windows_done,
                                timeout=60, interval=0.2)
                by_bucket = {r["bucket_start_ms"]: r for r in rows
                             if r["labels"] == {"service": "checkout", "instance": "c-1"}}
                for bucket_ms, n in counts.items():
                    row = by_bucket[bucket_ms]
                    self.assertEqual(row["features"], ["app.requests", "node.cpu"])
                    # The newest step of the window is this bucket: both features, one cell.
                    self.assertEqual(row["values"][-1],
                                     [n, cpu_at(bucket_ms // 1000 + STEP)], bucket_ms)
                    self.assertEqual(row["mask"][-1], [1, 1])

                status = d.status()["pipeline"]
                self.assertIn("queries", json.dumps(status["sources"]["node"]))
                self.assertGreaterEqual(status["detectors"]["api"]["windows_handed_on"],
                                        len(counts))

                # A reload that adds a detector rebuilds the pipeline; the new one works.
                d.write_config(CONFIG.format(extra=SECOND_DETECTOR.format(**fields), **fields))
                d.signal(signal.SIGHUP)
                wait_for("the reload", lambda: d.metric(
                    'anomalyd_config_reloads_total{result="success"}') == 1, timeout=30)
                rows2 = wait_for("windows of the added detector", lambda: read_rows(export2),
                                 timeout=60, interval=0.2)
                for r in rows2:
                    self.assertEqual(r["detector"], "cpu_only")
                    step_end = r["bucket_start_ms"] // 1000 + STEP
                    self.assertEqual(r["values"][-1], [cpu_at(step_end)])
                self.assertIsNotNone(d.find("pipeline built"))

                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""The Kafka source in its consumer group, against the mock cluster:

* a reload that rebuilds the pipeline, and a stop, before, during and after the consumer's
  first assignment: the daemon keeps serving (reload) or exits 0 (stop), never aborts.
  librdkafka 2.0.2's cooperative-sticky assignor aborts when a consumer is closed between its
  JoinGroup and SyncGroup answers (docs/delivery.md, "Rebalances"); "during" holds the
  SyncGroup answer back at the mock broker, so the signal lands in that window every time;
* a partition whose committed offset fell behind retention: the reset is counted, logged once
  and shown in /status; with auto.offset.reset=error the partition stops, and /status says so.

Skips (77) without kcat. Standard library only.
"""

import json
import os
import shutil
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, wait_for  # noqa: E402

SYNC_GROUP = 14  # the Kafka protocol's API key of SyncGroup

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 20s
kafka:
  brokers: "{brokers}"
  group_id: {group}
  properties:
    auto.commit.interval.ms: 200
    session.timeout.ms: 6000
    heartbeat.interval.ms: 500
{extra}sources:
  - name: app
    kafka:
      topics: [{topic}]
      time: {{path: ts, format: unix_ms, max_past: {max_past}}}
      labels: {{instance: instance}}
      features: {{requests: count}}
detectors:
  - name: api
    keys: [instance]
    features: [app.requests]
    step: 10s
    window: 60s
model_store: {{path: models}}
"""


def assigned(d, n):
    parts = d.status()["pipeline"]["sources"]["app"]["partitions"]
    return len([p for p in parts if p["assigned"]]) == n


class FirstAssignment(unittest.TestCase):
    """Reload and stop around the first assignment."""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("kcat"):
            raise unittest.SkipTest("kcat is not installed")
        cls.kafka = KafkaMock("logs:4")

    @classmethod
    def tearDownClass(cls):
        cls.kafka.close()

    def start(self, moment, name):
        """A daemon in a group of its own, once it has reached moment."""
        group = "first-%s-%d" % (name, time.monotonic_ns())
        self.fields = dict(brokers=self.kafka.bootstrap, group=group, topic="logs", extra="",
                           max_past="1h")
        if moment == "during":
            # The group's first SyncGroup is answered 4 s late: from the moment it reaches the
            # broker, the consumer has joined but has no assignment yet.
            self.assertEqual(self.kafka.command("request-delay 1 %d 4000" % SYNC_GROUP), "ok")
        d = Daemon(CONFIG.format(**self.fields))
        self.addCleanup(d.close)
        if moment == "during":
            wait_for("the SyncGroup request", lambda: self.kafka.command(
                "request-delays-left 1 %d" % SYNC_GROUP) == "ok 0", timeout=30)
            self.assertFalse(assigned(d, 4))
        elif moment == "after":
            wait_for("the first assignment", lambda: assigned(d, 4), timeout=30)
        return d

    def stop(self, moment):
        d = self.start(moment, "stop-" + moment)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(timeout=30), 0, "".join(d.lines[-20:]))

    def reload(self, moment):
        d = self.start(moment, "reload-" + moment)
        # A changed source rebuilds the pipeline: the old consumer closes, a new one joins.
        d.write_config(CONFIG.format(**{**self.fields, "max_past": "2h"}))
        d.signal(signal.SIGHUP)
        wait_for("the reload", lambda: d.metric(
            'anomalyd_config_reloads_total{result="success"}') == 1, timeout=30)
        wait_for("the previous pipeline to stop",
                 lambda: d.find("the previous pipeline has stopped"), timeout=30)
        wait_for("the new consumer's assignment", lambda: assigned(d, 4), timeout=60)
        self.assertIsNone(d.proc.poll())
        self.assertEqual(d.get("/healthz")[0], 200)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(timeout=30), 0, "".join(d.lines[-20:]))

    def test_stop_before_first_assignment(self):
        self.stop("before")

    def test_stop_during_first_assignment(self):
        self.stop("during")

    def test_stop_after_first_assignment(self):
        self.stop("after")

    def test_reload_before_first_assignment(self):
        self.reload("before")

    def test_reload_during_first_assignment(self):
        self.reload("during")

    def test_reload_after_first_assignment(self):
        self.reload("after")


class OffsetOutOfRange(unittest.TestCase):
    """A committed offset that retention deleted (the mock keeps about 5 MiB a partition)."""

    def setUp(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")

    def test_reset_counted_and_shown_then_stopped_with_error_policy(self):
        now = int(time.time() * 1000)
        with KafkaMock("old:1") as kafka:
            fields = dict(brokers=kafka.bootstrap, group="behind", topic="old", extra="",
                          max_past="1h")
            kafka.produce("old", [("a", json.dumps({"ts": now - 60000 + i * 3000,
                                                     "instance": "a"})) for i in range(20)])
            with Daemon(CONFIG.format(**fields)) as d:
                wait_for("a commit", lambda: (kafka.committed("behind", "old")[1] or 0) > 0,
                         timeout=60)
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)
            committed = kafka.committed("behind", "old")[0][0]
            # 8 MB into the one partition while nobody reads it: retention drops the commit's
            # offset, and the rebuild point before it.
            pad = "x" * 1000
            kafka.produce("old", [("a", json.dumps({"ts": now - 20000, "instance": "a",
                                                     "pad": pad})) for _ in range(8000)])
            low = int(kafka.consume("old", 1, fmt="%o\n").split()[0])
            self.assertGreater(low, committed)

            # auto.offset.reset=error: librdkafka stops the partition; the daemon says so.
            stop_on_error = dict(fields, extra="    auto.offset.reset: error\n")
            with Daemon(CONFIG.format(**stop_on_error)) as d:
                series = 'anomalyd_kafka_offset_resets_total{source="app"}'
                wait_for("the reset to be counted", lambda: d.metric(series) == 1, timeout=60)
                part = d.status()["pipeline"]["sources"]["app"]["partitions"][0]
                self.assertEqual(part["state"], "offset_out_of_range")
                self.assertEqual(part["offset_resets"], 1)
                self.assertEqual(part["last_processed"], -1)
                self.assertIn("Offset out of range", part["last_error"]["message"])
                self.assertEqual(d.get("/healthz")[0], 200)
                stopped = [r for r in d.records()
                           if r.get("msg", "").startswith("offset out of range")]
                self.assertEqual(len(stopped), 1, stopped)
                self.assertEqual(stopped[0]["level"], "error")
                self.assertEqual(stopped[0]["partition"], 0)
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)

            # The default (earliest): reset to the oldest offset kept, counted once, logged
            # once (librdkafka's own line is left out), and the partition reads on.
            with Daemon(CONFIG.format(**fields)) as d:
                series = 'anomalyd_kafka_offset_resets_total{source="app"}'
                wait_for("the reset to be counted", lambda: d.metric(series) == 1, timeout=60)
                wait_for("the partition to read on", lambda: d.status()["pipeline"]["sources"]
                         ["app"]["partitions"][0]["last_processed"] >= low, timeout=60)
                part = d.status()["pipeline"]["sources"]["app"]["partitions"][0]
                self.assertEqual(part["state"], "reading")
                self.assertEqual(part["offset_resets"], 1)
                self.assertIn("Offset out of range", part["last_error"]["message"])
                self.assertIn("at", part["last_error"])
                warned = [r for r in d.records()
                          if r.get("msg", "").startswith("offset out of range")]
                self.assertEqual(len(warned), 1, warned)
                self.assertEqual(warned[0]["level"], "warn")
                self.assertEqual((warned[0]["topic"], warned[0]["partition"]), ("old", 0))
                self.assertEqual(warned[0]["auto_offset_reset"], "earliest")
                self.assertFalse([r for r in d.records() if r.get("facility") == "OFFSET"])
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

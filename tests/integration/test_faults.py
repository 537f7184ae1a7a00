#!/usr/bin/python3
"""Fault tests of the whole pipeline, each with exact counts (docs/delivery.md):

* a mock broker taken down and brought back, once the one that leads the alerts topic (alerts
  wait, offsets wait for them, nothing is lost or doubled) and once the one that leads the log
  topic and coordinates the group (the consumer resumes, every event is counted once);
* an invalid config on SIGHUP changes nothing, and a valid one that adds a detector makes it
  score every window from then on;
* a corrupt first model version is refused once (not once per loader), a valid one then
  serves, a corrupt later one is refused while the valid one keeps serving, and no window
  goes unscored.

Skips (77) without kcat, redis-server or torch.
"""

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, Redis, wait_for  # noqa: E402
import test_delivery as delivery  # noqa: E402  (skips without torch)

STEP_MS = delivery.STEP_S * 1000
ENTITIES = delivery.ENTITIES


def logged_alerts(d):
    return {r["id"]: r for r in d.records() if r.get("msg") == "alert"}


def exported(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def closed_events(events, bucket, t0_ms):
    """How many of the events fall before bucket (their buckets close once it has data)."""
    return sum(1 for _, text in events if json.loads(text)["ts"] < t0_ms + bucket * STEP_MS)


def publish(store, version, source=None, corrupt=False):
    """Makes store/api/version (a copy of source, truncated when corrupt) and points CURRENT at
    it atomically, as the trainer does."""
    folder = os.path.join(store, "api", version)
    if source:
        shutil.copytree(os.path.join(store, "api", source), folder)
    if corrupt:
        with open(os.path.join(folder, "model.safetensors"), "r+b") as f:
            f.truncate(100)
    tmp = os.path.join(store, "api", "CURRENT.tmp")
    with open(tmp, "w") as f:
        f.write(version + "\n")
    os.rename(tmp, os.path.join(store, "api", "CURRENT"))


class Faults(unittest.TestCase):
    def setUp(self):
        for tool in ("kcat", "redis-server"):
            if not shutil.which(tool):
                self.skipTest(tool + " is not installed")
        self.rng = random.Random(31)
        now_ms = int(time.time() * 1000)
        self.t0_ms = (now_ms - 3600_000) // STEP_MS * STEP_MS
        self.folder = tempfile.mkdtemp(prefix="anomalyd-faults-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.store = os.path.join(self.folder, "models")
        os.mkdir(self.store)
        delivery.train(self.store, self.t0_ms, self.folder)
        self.group = "faults-%d" % self.rng.randrange(1 << 30)

    def config(self, kafka, redis, extra_detectors=""):
        text = delivery.FAST_REJOIN_CONFIG.format(brokers=kafka.bootstrap, group=self.group,
                                      step=delivery.STEP_S, window=delivery.STEP_S * delivery.T,
                                      redis=redis.url, store=self.store)
        return text.replace("sinks:\n", extra_detectors + "sinks:\n")

    def events(self, buckets):
        return delivery.events_for(self.t0_ms, buckets, self.rng)

    def test_broker_down_and_back(self):
        with KafkaMock("logs:1", "alerts:1", brokers=2) as kafka, Redis() as redis:
            # Broker 1 leads the logs and coordinates the group, broker 2 leads the alerts.
            for command in ("partition-leader logs 0 1", "partition-leader alerts 0 2",
                            "coordinator group %s 1" % self.group):
                self.assertEqual(kafka.command(command), "ok")
            with Daemon(self.config(kafka, redis)) as d:
                wait_for("the model", lambda: d.find("serving a model"), timeout=20)
                first = self.events(range(0, 30))
                kafka.produce("logs", first)
                wait_for("the first commits", lambda: kafka.committed(self.group, "logs")[1]
                         == closed_events(first, 29, self.t0_ms), timeout=90, interval=0.3)

                # 1. The alerts' broker goes down during the incident: Redis has the alerts,
                # Kafka cannot take them, and the offsets wait for Kafka.
                self.assertEqual(kafka.command("broker-down 2"), "ok")
                second = self.events(range(30, 60)) + [delivery.closing_event(self.t0_ms, 60)]
                kafka.produce("logs", second)
                wait_for("the resolution in Redis", lambda: any(
                    json.loads(f["alert"])["state"] == "resolved"
                    for _, f in redis.stream("anomalyd:alerts")), timeout=90, interval=0.3)
                wait_for("the last bucket", lambda: d.status()["pipeline"]["detectors"]["api"]
                         ["scoring"].get("last_bucket_start_ms", 0)
                         >= self.t0_ms + 59 * STEP_MS, timeout=90, interval=0.3)
                total = len(first) + len(second)
                self.assertLess(kafka.committed(self.group, "logs")[1], total - 1)
                self.assertGreater(d.metric('anomalyd_alerts_unacknowledged{detector="api"}'),
                                   0)
                self.assertEqual(d.metric('anomalyd_kafka_source_paused{source="app"}'), 0)

                self.assertEqual(kafka.command("broker-up 2"), "ok")
                wait_for("the commits", lambda: kafka.committed(self.group, "logs")[1]
                         == total - 1, timeout=90, interval=0.3)
                alerts = logged_alerts(d)
                self.assertGreaterEqual(len(alerts), 2)
                out = kafka.consume("alerts", len(alerts), fmt="%s\n")
                kafka_ids = [json.loads(line)["id"] for line in out.splitlines()]
                self.assertEqual(sorted(kafka_ids), sorted(alerts))
                redis_ids = [f["id"] for _, f in redis.stream("anomalyd:alerts")]
                self.assertEqual(sorted(redis_ids), sorted(alerts))

                # 2. The logs' broker and group coordinator goes down for longer than the
                # session (6 s): the consumer loses its partition, gets it back, and reads on
                # where it left it. The events that follow are all read, once.
                self.assertEqual(kafka.command("broker-down 1"), "ok")
                time.sleep(9)
                self.assertEqual(kafka.command("broker-up 1"), "ok")
                wait_for("the partition back", lambda: d.find(
                    "a partition came back; reading on where this consumer left it"),
                    timeout=60, interval=0.3)
                third = self.events(range(60 + delivery.T + 1, 90))
                third.append(delivery.closing_event(self.t0_ms, 90))
                kafka.produce("logs", third)
                total += len(third)
                wait_for("the last commits", lambda: kafka.committed(self.group, "logs")[1]
                         == total - 1, timeout=90, interval=0.3)
                self.assertEqual(
                    d.metric('anomalyd_events_total{source="app",result="accepted"}'), total)
                status = d.status()["pipeline"]["detectors"]["api"]
                self.assertEqual(status["late"], 0)
                self.assertEqual(logged_alerts(d).keys(), alerts.keys())
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)

    def test_sighup_invalid_then_a_new_detector(self):
        export = os.path.join(self.folder, "copy.jsonl")
        copy = ("  - name: api_copy\n    model: api\n    keys: [instance]\n"
                "    features: [app.requests, app.errors]\n    step: %ds\n    window: %ds\n"
                "    allowed_lateness: 0s\n    source_idle_timeout: 1h\n    export_path: %s\n"
                % (delivery.STEP_S, delivery.STEP_S * delivery.T, export))
        with KafkaMock("logs:1", "alerts:1") as kafka, Redis() as redis:
            good = self.config(kafka, redis)
            with Daemon(good) as d:
                wait_for("the model", lambda: d.find("serving a model"), timeout=20)
                first = self.events(range(0, 20))
                kafka.produce("logs", first)
                wait_for("the first commits", lambda: kafka.committed(self.group, "logs")[1]
                         == closed_events(first, 19, self.t0_ms), timeout=90, interval=0.3)
                scored = d.metric('anomalyd_windows_scored_total{detector="api"}')
                self.assertGreater(scored, 0)

                # An invalid edit (a typo in a key) changes nothing, and scoring goes on.
                d.write_config(good.replace("allowed_lateness:", "allowed_latenes:"))
                d.signal(signal.SIGHUP)
                wait_for("the refusal", lambda: d.metric(
                    'anomalyd_config_reloads_total{result="failure"}') == 1, timeout=30)
                self.assertEqual(d.metric('anomalyd_config_reloads_total{result="success"}'), 0)
                self.assertEqual(list(d.status()["pipeline"]["detectors"]), ["api"])
                second = self.events(range(20, 30))
                kafka.produce("logs", second)
                wait_for("the next commits", lambda: kafka.committed(self.group, "logs")[1]
                         == len(first) + closed_events(second, 29, self.t0_ms), timeout=90,
                         interval=0.3)
                self.assertGreater(d.metric('anomalyd_windows_scored_total{detector="api"}'),
                                   scored)

                # A valid edit that adds a detector rebuilds the pipeline; the new detector
                # scores every window of every bucket that closes from then on.
                d.write_config(self.config(kafka, redis, copy))
                d.signal(signal.SIGHUP)
                wait_for("the reload", lambda: d.metric(
                    'anomalyd_config_reloads_total{result="success"}') == 1, timeout=30)
                wait_for("the new pipeline's assignment", lambda: d.status()["pipeline"]
                         ["sources"]["app"]["partitions"], timeout=30, interval=0.3)
                third = self.events(range(30, 40)) + [delivery.closing_event(self.t0_ms, 40)]
                kafka.produce("logs", third)
                total = len(first) + len(second) + len(third)
                wait_for("the last commits", lambda: kafka.committed(self.group, "logs")[1]
                         == total - 1, timeout=90, interval=0.3)
                rows = exported(export)
                scored_cells = {(r["labels"]["instance"], r["bucket_start_ms"])
                                for r in rows if "score" in r and r["model_version"] == "v1"}
                for b in range(30, 40):
                    for instance in ENTITIES:
                        self.assertIn((instance, self.t0_ms + b * STEP_MS), scored_cells)
                self.assertEqual(d.metric('anomalyd_windows_scored_total{detector="api_copy"}'),
                                 len(scored_cells))
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)

    def test_corrupt_versions_and_no_window_unscored(self):
        export = os.path.join(self.folder, "api.jsonl")
        publish(self.store, "v0", source="v1", corrupt=True)
        with KafkaMock("logs:1", "alerts:1") as kafka, Redis() as redis:
            config = self.config(kafka, redis).replace(
                "    alert:", "    export_path: %s\n    alert:" % export, 1)
            with Daemon(config) as d:
                # A corrupt first version: refused, and counted once.
                wait_for("the refusal", lambda: d.metric(
                    'anomalyd_model_versions_refused_total{model="api"}') == 1, timeout=30)
                time.sleep(0.5)
                self.assertEqual(d.metric('anomalyd_model_load_failures_total{detector="api"}'),
                                 1)
                self.assertIn("v0/model.safetensors",
                              d.status()["pipeline"]["detectors"]["api"]["model"]["error"])

                publish(self.store, "v1")
                wait_for("v1", lambda: d.find("serving a model"), timeout=30)
                first = self.events(range(0, 20))
                kafka.produce("logs", first)
                wait_for("the first commits", lambda: kafka.committed(self.group, "logs")[1]
                         == closed_events(first, 19, self.t0_ms), timeout=90, interval=0.3)

                # A corrupt later version: refused, v1 keeps serving every window.
                publish(self.store, "v2", source="v1", corrupt=True)
                wait_for("the second refusal", lambda: d.metric(
                    'anomalyd_model_load_failures_total{detector="api"}') == 2, timeout=30)
                second = self.events(range(20, 40)) + [delivery.closing_event(self.t0_ms, 40)]
                kafka.produce("logs", second)
                total = len(first) + len(second)
                wait_for("the last commits", lambda: kafka.committed(self.group, "logs")[1]
                         == total - 1, timeout=90, interval=0.3)
                rows = exported(export)
                observed = [r for r in rows if any(r["mask"][-1])]
                self.assertEqual(len(observed), 40 * len(ENTITIES))
                for r in observed:
                    self.assertEqual(r.get("model_version"), "v1", r["bucket_start_ms"])
                self.assertEqual(d.metric('anomalyd_windows_scored_total{detector="api"}'),
                                 len(observed))
                for reason in ("no_model", "failed"):
                    self.assertEqual(d.metric('anomalyd_windows_unscored_total{detector="api",'
                                              'reason="%s"}' % reason), 0)
                self.assertEqual(d.metric('anomalyd_model_info{detector="api",model="api",'
                                          'version="v1"}'), 1)
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

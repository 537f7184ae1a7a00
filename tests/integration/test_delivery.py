#!/usr/bin/python3
"""Alerts and delivery, end to end: logs through the Kafka mock cluster, scored by a model the
reference trainer made from normal history, alerts to a real redis-server and to a Kafka
topic. While Redis is down the alerts wait and the group's offsets stop short of the events
they came from (at-least-once: nothing is committed before every sink has its alerts); once
Redis is back every alert is there exactly once, the Kafka topic holds every one, and the
offsets reach the end.

Skips (77) without kcat or torch.
"""

import csv
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
from harness import Daemon, KafkaMock, Redis, wait_for  # noqa: E402

try:
    import torch  # noqa: F401  (the trainer needs it)
except ImportError:
    print("skipped: torch is not installed")
    sys.exit(77)

SOURCE = os.environ.get("AD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
STEP_S = 10
T = 8
ENTITIES = ["api-%d" % i for i in range(6)]
INCIDENT = ("api-3", range(40, 44))  # entity and buckets (from t0) of the injected incident

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 30s
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
    alert: {{for: 2, resolve_for: 3, repeat_interval: 0s}}
sinks:
  kafka: {{topic: alerts}}
  redis: {{url: "{redis}", queue_limit: 1000, connect_timeout: 1s}}
scoring:
  backend: cpu
model_store: {{path: {store}}}
"""

# A member that died, or a pipeline rebuilt by a reload, leaves the group after its session
# times out: tests that restart or rebuild keep that short.
FAST_REJOIN_CONFIG = CONFIG.replace(
    "    auto.commit.interval.ms: 200\n",
    "    auto.commit.interval.ms: 200\n    session.timeout.ms: 6000\n"
    "    heartbeat.interval.ms: 500\n")


def counts(b, e, rng):
    n = int(8 + 4 * math.sin(2 * math.pi * (b + e) / 12) + rng.randrange(0, 2))
    errors = 1 if rng.random() < 0.2 else 0
    return n, errors


def train(store, t0_ms, folder):
    """The reference trainer on 400 buckets of normal history, as CSV."""
    rng = random.Random(5)
    path = os.path.join(folder, "history.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_ms", "instance", "app.requests", "app.errors"])
        for b in range(-400, 0):
            for e, instance in enumerate(ENTITIES):
                n, errors = counts(b, e, rng)
                w.writerow([t0_ms + b * STEP_S * 1000, instance, n, errors])
    r = subprocess.run(
        ["/usr/bin/python3", os.path.join(SOURCE, "train", "anomalyd_train.py"), "--csv", path,
         "--window", str(T), "--step-ms", str(STEP_S * 1000), "--fill", "zero",
         "--features", "app.requests,app.errors", "--store", store, "--model", "api",
         "--version", "v1", "--hidden", "16", "--epochs", "15", "--seed", "3", "--threads", "1"],
        capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError("the trainer failed: " + r.stderr)


def events_for(t0_ms, buckets, rng, incident=INCIDENT):
    lines = []
    for b in buckets:
        for e, instance in enumerate(ENTITIES):
            n, errors = counts(b, e, rng)
            if instance == incident[0] and b in incident[1]:
                n, errors = 40, 30
            for i in range(n):
                t = t0_ms + b * STEP_S * 1000 + rng.randrange(0, STEP_S * 1000)
                lines.append((t, instance, json.dumps({
                    "ts": t, "instance": instance, "status": 503 if i < errors else 200})))
    lines.sort()
    return [(key, text) for _, key, text in lines]


def closing_event(t0_ms, bucket):
    """One event far enough ahead that the watermark passes every bucket before `bucket`."""
    return ("end", json.dumps({"ts": t0_ms + (bucket + T) * STEP_S * 1000, "instance": "api-0",
                               "status": 200}))


def alert_records(d):
    return [r for r in d.records() if r.get("msg") == "alert"]


class Delivery(unittest.TestCase):
    def setUp(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")
        if not shutil.which("redis-server"):
            self.skipTest("redis-server is not installed")

    def test_alerts_wait_for_redis_and_offsets_wait_for_alerts(self):
        rng = random.Random(11)
        now_ms = int(time.time() * 1000)
        t0_ms = (now_ms - 3600_000) // (STEP_S * 1000) * (STEP_S * 1000)
        folder = tempfile.mkdtemp(prefix="anomalyd-delivery-")
        self.addCleanup(shutil.rmtree, folder, True)
        store = os.path.join(folder, "models")
        os.mkdir(store)
        train(store, t0_ms, folder)

        with KafkaMock("logs:1", "alerts:1") as kafka, Redis() as redis:
            group = "it-%d" % rng.randrange(1 << 30)
            config = CONFIG.format(brokers=kafka.bootstrap, group=group, step=STEP_S,
                                   window=STEP_S * T, redis=redis.url, store=store)
            with Daemon(config) as d:
                wait_for("the model", lambda: d.find("serving a model"), timeout=20)

                # 1. Normal traffic: scored, nothing to wait for, offsets to the end.
                first = events_for(t0_ms, range(0, 30), rng)
                kafka.produce("logs", first)
                # Bucket 29 stays open (the watermark is its newest event): its events wait.
                closed = sum(1 for _, text in first
                             if json.loads(text)["ts"] < t0_ms + 29 * STEP_S * 1000)
                wait_for("the first commits",
                         lambda: kafka.committed(group, "logs")[1] == closed,
                         timeout=90, interval=0.5)

                # 2. Redis goes away; the incident comes.
                redis.kill()
                second = events_for(t0_ms, range(30, 60), rng) + [closing_event(t0_ms, 60)]
                kafka.produce("logs", second)
                wait_for("the incident's alert", lambda: any(
                    r["state"] == "firing" and r["entity"] == "instance=" + INCIDENT[0]
                    for r in alert_records(d)), timeout=90, interval=0.3)
                wait_for("the resolution", lambda: any(
                    r["state"] == "resolved" and r["entity"] == "instance=" + INCIDENT[0]
                    for r in alert_records(d)), timeout=90, interval=0.3)
                # Everything after the first alert's bucket is scored, yet not committed: the
                # offsets wait for Redis.
                wait_for("the last bucket", lambda: d.status()["pipeline"]["detectors"]["api"]
                         ["scoring"].get("last_bucket_start_ms", 0)
                         >= t0_ms + 59 * STEP_S * 1000, timeout=90, interval=0.3)
                committed = kafka.committed(group, "logs")[1]
                self.assertLess(committed, len(first) + len(second) - 1,
                                "offsets were committed past alerts Redis had not taken")
                self.assertGreater(d.metric('anomalyd_alerts_unacknowledged{detector="api"}'), 0)
                self.assertEqual(redis.stream("anomalyd:alerts"), [])

                # 3. Redis is back: every alert arrives once, and the offsets move on.
                redis.start()
                total = len(first) + len(second) - 1  # the closing event's bucket stays open
                wait_for("the commits", lambda: kafka.committed(group, "logs")[1] == total,
                         timeout=90, interval=0.5)
                logged = {r["id"]: r for r in alert_records(d)}
                entries = redis.stream("anomalyd:alerts")
                ids = [fields["id"] for _, fields in entries]
                self.assertEqual(sorted(ids), sorted(logged), "Redis lost or doubled an alert")
                for _, fields in entries:
                    doc = json.loads(fields["alert"])
                    self.assertEqual(doc["id"], fields["id"])
                    self.assertEqual(doc["detector"], "api")
                    self.assertEqual(doc["state"], logged[doc["id"]]["state"])
                    self.assertEqual(doc["model_version"], "v1")
                incident = [json.loads(f["alert"]) for _, f in entries
                            if f["entity"] == "instance=" + INCIDENT[0]]
                states = [a["state"] for a in incident]
                self.assertIn("firing", states)
                self.assertEqual(states[-1], "resolved")
                state = redis.cli("HGET", "anomalyd:state", "api|instance=" + INCIDENT[0])
                self.assertEqual(json.loads(state)["state"], "resolved")

                # The Kafka sink has every one too (keyed by entity, the id in a header).
                out = kafka.consume("alerts", len(logged), fmt="%k\t%s\n")
                seen = {}
                for line in out.splitlines():
                    key, value = line.split("\t", 1)
                    doc = json.loads(value)
                    seen[doc["id"]] = key
                self.assertEqual(sorted(seen), sorted(logged))
                for alert_id, key in seen.items():
                    self.assertEqual(key, logged[alert_id]["entity"])

                # Each alert's delivery latency was observed once, when its last sink had it.
                self.assertEqual(d.metric('anomalyd_alert_delivery_seconds_count{detector="api"}'),
                                 len(logged))

                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

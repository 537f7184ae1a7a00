#!/usr/bin/python3
"""Kafka logs to windows, end to end: a real client (kcat) produces JSON service logs to the
Kafka mock cluster, anomalyd consumes them as a consumer group, and the windows it exports
must be exactly the windows computed here from the same events. Bad events must be counted by
reason and dead-lettered with the reason in a header, and once every bucket has closed the
group's committed offsets must reach the end of every partition.

Skips (77) without kcat. Standard library only.
"""

import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, wait_for  # noqa: E402

STEP_S = 10
T = 3
ENTITIES = [("checkout", "checkout-1"), ("checkout", "checkout-2"), ("payments", "payments-1")]

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
      dead_letter_topic: rejected
      max_message_bytes: 4KiB
      time: {{path: ts, format: rfc3339, max_past: 1h}}
      labels: {{service: service, instance: instance}}
      filters: ['kind == "request"']
      features:
        requests: count
        errors: count_if status >= 500
        latency: mean latency_ms
        latency_max: max latency_ms
detectors:
  - name: api
    keys: [service, instance]
    features: [app.requests, app.errors, app.latency, app.latency_max]
    step: {step}s
    window: {window}s
    allowed_lateness: 2s
    source_idle_timeout: 10s
    export_path: {export}
model_store: {{path: models}}
"""


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def make_events(t0_ms, rng):
    """Good events per entity over 6 buckets, each bucket with its own counts."""
    events = []
    for bucket in range(6):
        for e, (service, instance) in enumerate(ENTITIES):
            if (bucket + e) % 4 == 3:
                continue  # some buckets without data, to exercise the fills
            for i in range(1 + (bucket * 3 + e) % 5):
                t = t0_ms + bucket * STEP_S * 1000 + rng.randrange(0, STEP_S * 1000)
                events.append({"ts": rfc3339(t), "kind": "request", "service": service,
                               "instance": instance,
                               "status": 503 if (i + bucket + e) % 4 == 0 else 200,
                               "latency_ms": round(rng.uniform(1, 200), 3), "_t": t})
    return events


def expected_windows(events, t0_ms):
    """The windows the detector must hand on, computed from the rules in docs/windows.md."""
    cells = {}
    for ev in events:
        key = (ev["service"], ev["instance"])
        b = ev["_t"] // (STEP_S * 1000)
        c = cells.setdefault((key, b), {"n": 0, "err": 0, "lat": [], })
        c["n"] += 1
        c["err"] += 1 if ev["status"] >= 500 else 0
        c["lat"].append(ev["latency_ms"])
    first = t0_ms // (STEP_S * 1000)
    windows = {}
    for key in ENTITIES:
        ring = {}
        last_mean = last_max = 0.0
        data_buckets = [b for (k, b) in cells if k == key]
        if not data_buckets:
            continue
        start, stop = min(data_buckets), max(data_buckets) + T - 1
        for b in range(first - T, stop + 1):
            c = cells.get((key, b))
            if b < start:
                ring[b] = ([0, 0, 0, 0], [0, 0, 0, 0])  # before the first data
            elif c:
                last_mean = sum(c["lat"]) / len(c["lat"])
                last_max = max(c["lat"])
                ring[b] = ([c["n"], c["err"], last_mean, last_max], [1, 1, 1, 1])
            else:  # count-like features fill with zero, mean and max carry
                ring[b] = ([0, 0, last_mean, last_max], [0, 0, 0, 0])
            # A window is handed on when its newest bucket has data (one without has nothing
            # to score: it is counted as unscored, not exported).
            if b >= start and (key, b) in cells:
                windows[(key, b)] = [ring[x] for x in range(b - T + 1, b + 1)]
    return windows


def bad_messages(t0_ms):
    ok = {"kind": "request", "service": "checkout", "instance": "checkout-1", "status": 200,
          "latency_ms": 1}
    ts = rfc3339(t0_ms + 1000)
    cases = [
        ("malformed_json", '{"ts": "%s", "kind": "request"' % ts),
        ("not_an_object", "[1, 2, 3]"),
        ("time_missing", json.dumps(ok)),
        ("time_invalid", json.dumps({**ok, "ts": "yesterday"})),
        ("time_too_old", json.dumps({**ok, "ts": "2001-01-01T00:00:00Z"})),
        ("time_in_future", json.dumps({**ok, "ts": "2999-01-01T00:00:00Z"})),
        ("label_missing", json.dumps({**ok, "ts": ts, "instance": None})),
        ("wrong_type", json.dumps({**ok, "ts": ts, "latency_ms": "fast"})),
        ("not_finite", json.dumps({**ok, "ts": ts, "latency_ms": "NaN"})),
        ("too_large", json.dumps({**ok, "ts": ts, "padding": "x" * 5000})),
    ]
    return cases


class KafkaWindows(unittest.TestCase):
    def setUp(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")

    def test_logs_become_windows(self):
        rng = random.Random(7)
        now_ms = int(time.time() * 1000)
        # Six buckets that ended at least a minute ago, aligned to the grid.
        t0_ms = (now_ms - 150_000) // (STEP_S * 1000) * (STEP_S * 1000)
        events = make_events(t0_ms, rng)
        bad = bad_messages(t0_ms)
        filtered = [json.dumps({"ts": rfc3339(t0_ms + 5000), "kind": "healthcheck",
                                "service": "checkout", "instance": "checkout-1"})] * 3
        # Shuffle within each entity a little (within the 2 s lateness, so nothing is late).
        messages = []
        for ev in events:
            jitter = rng.randrange(0, 1500)
            messages.append((ev["_t"] + jitter, ev["service"] + "/" + ev["instance"],
                             json.dumps({k: v for k, v in ev.items() if k != "_t"})))
        messages.sort()
        lines = [(key, value) for _, key, value in messages]
        lines += [("bad", text) for _, text in bad] + [("filtered", text) for text in filtered]

        with KafkaMock("logs:4", "rejected:1") as kafka:
            kafka.produce("logs", lines)
            group = "it-%d" % rng.randrange(1 << 30)
            folder = tempfile.mkdtemp(prefix="anomalyd-windows-")
            self.addCleanup(shutil.rmtree, folder, True)
            export = os.path.join(folder, "windows.jsonl")
            config = CONFIG.format(brokers=kafka.bootstrap, group=group, step=STEP_S,
                                   window=STEP_S * T, export=export)
            with Daemon(config) as d:
                want = expected_windows(events, t0_ms)
                last_bucket = max(b for (_, b) in want)

                def exported():
                    if not os.path.exists(export):
                        return None
                    with open(export) as f:
                        rows = [json.loads(line) for line in f if line.endswith("\n")]
                    done = any(r["bucket_start_ms"] == last_bucket * STEP_S * 1000 for r in rows)
                    return rows if done else None

                rows = wait_for("the last window", exported, timeout=90, interval=0.2)
                got = {}
                for r in rows:
                    key = (r["labels"]["service"], r["labels"]["instance"])
                    b = r["bucket_start_ms"] // (STEP_S * 1000)
                    self.assertNotIn((key, b), got, "window handed on twice")
                    got[(key, b)] = list(zip(r["values"], r["mask"]))
                    self.assertEqual(r["features"], ["app.requests", "app.errors",
                                                     "app.latency", "app.latency_max"])
                self.assertEqual(sorted(got), sorted(want))
                for k, window in want.items():
                    for (values, mask), (gv, gm) in zip(window, got[k]):
                        self.assertEqual(gm, mask, k)
                        for a, b in zip(values, gv):
                            self.assertTrue(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6),
                                            "%s: %s != %s" % (k, values, gv))

                m = d.metrics()
                src = 'source="app"'
                self.assertEqual(m['anomalyd_events_total{%s,result="accepted"}' % src],
                                 len(events))
                self.assertEqual(m['anomalyd_events_total{%s,result="filtered"}' % src],
                                 len(filtered))
                for reason, _ in bad:
                    self.assertEqual(
                        m['anomalyd_events_rejected_total{%s,reason="%s"}' % (src, reason)], 1,
                        reason)
                self.assertEqual(m['anomalyd_window_events_late_total{detector="api"}'], 0)
                self.assertEqual(m['anomalyd_window_entities{detector="api"}'], 3)

                # Every rejected event is in the dead-letter topic with its reason.
                letters = kafka.consume("rejected", len(bad), fmt="%h\n")
                reasons = sorted(h.split("anomalyd-reason=")[1].split(",")[0]
                                 for h in letters.splitlines() if h)
                self.assertEqual(reasons, sorted(r for r, _ in bad))

                # Everything has been handed on: the group commits to the end of the topic.
                total = len(lines)
                wait_for("the commits", lambda: kafka.committed(group, "logs")[1] == total,
                         timeout=30, interval=0.5)

                status = d.status()
                det = status["pipeline"]["detectors"]["api"]
                self.assertEqual(det["entities"], 3)
                self.assertEqual(len(status["pipeline"]["sources"]["app"]["partitions"]), 4)

                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

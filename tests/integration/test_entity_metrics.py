#!/usr/bin/python3
"""Scores as metrics (docs/entity-metrics.md): a real prometheus scrapes the daemon's
/metrics/entities and a Grafana-style query through its HTTP API returns each entity's latest
score, surprise and anomalous flag, the values an offline replay of the same events computes
for the entities' last windows. The cap (scoring.entity_metrics_limit: 2, three entities) leaves
one out and counts it; an entity forgotten by the judge's expiry drops out and frees its place
for the one left out; a reload raises the cap live.

Skips (77) without kcat or prometheus.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, Daemon, KafkaMock, PrometheusProcess, parse_metrics, wait_for  # noqa: E402,E501
import oncall  # noqa: E402

for tool in ("kcat", "prometheus"):
    if not shutil.which(tool):
        print("skipped: %s is not installed" % tool)
        sys.exit(77)

ENTITIES = ["a", "b", "c"]
B_STOPS = 110  # b sends nothing from this bucket on: forgotten six buckets later
END = 130


class Prometheus(PrometheusProcess):
    """A real prometheus scraping /metrics/entities of one daemon every second."""

    def __init__(self, target):
        super().__init__("anomalyd-prom-scrape-")
        self.start("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                   "scrape_configs:\n"
                   "  - job_name: anomalyd-entities\n"
                   "    metrics_path: /metrics/entities\n"
                   # The entities' labels (instance, here) are theirs, not the target's.
                   "    honor_labels: true\n"
                   "    static_configs: [{targets: ['%s']}]\n" % target,
                   os.path.join(self.dir, "tsdb"))

    def query(self, expr):
        """The instant vector of expr as {instance: value}; None while prometheus cannot
        answer."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                doc = json.loads(r.read())
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited; see " + self.log.name)
            return None
        return {s["metric"].get("instance"): float(s["value"][1]) for s in doc["data"]["result"]}


def last_windows(scores_path):
    """Each entity's last scored window in a replay's --scores output."""
    last = {}
    with open(scores_path) as f:
        for line in f:
            doc = json.loads(line)
            last[doc["labels"]["instance"]] = doc
    return last


class EntityMetrics(unittest.TestCase):
    def test_scrape_query_cap_and_expiry(self):
        rng = oncall.rng(3)
        t0 = oncall.t0(int(time.time() * 1000))
        folder = tempfile.mkdtemp(prefix="anomalyd-entities-")
        self.addCleanup(shutil.rmtree, folder, True)
        store = os.path.join(folder, "models")
        oncall.write_model(store)
        # a, b and c come first in that order: a and b get the two series.
        lines = [(name, json.dumps({"ts": t0 + i, "instance": name}))
                 for i, name in enumerate(ENTITIES)]
        lines += oncall.events(t0, range(0, B_STOPS), ENTITIES, rng, [("c", range(100, 101))])
        lines += oncall.events(t0, range(B_STOPS, END), ["a", "c"], rng)
        lines.append(oncall.closing_event(t0, END))
        lines.sort(key=lambda kv: json.loads(kv[1])["ts"])

        # What the daemon's code computes for these events, offline.
        config_text = oncall.CONFIG.format(brokers="127.0.0.1:9", group="g", store=store,
                                           extra="")
        config_path = os.path.join(folder, "replay.yaml")
        with open(config_path, "w") as f:
            f.write(config_text)
        events_path = os.path.join(folder, "events.jsonl")
        with open(events_path, "w") as f:
            f.writelines(text + "\n" for _, text in lines)
        scores_path = os.path.join(folder, "scores.jsonl")
        subprocess.run([ANOMALYD, "replay", "-c", config_path, "--input", events_path,
                        "--scores", scores_path, "--log-level", "warn"],
                       stdout=subprocess.DEVNULL, check=True, timeout=120)
        expected = last_windows(scores_path)

        with KafkaMock("logs:1") as kafka:
            group = "entities-%d" % rng.randrange(1 << 30)
            config = oncall.CONFIG.format(
                brokers=kafka.bootstrap, group=group, store=store,
                extra="")
            config = config.replace("scoring: {backend: cpu}",
                                    "scoring: {backend: cpu, entity_metrics_limit: 2}")
            with Daemon(config) as d:
                kafka.produce("logs", lines)
                wait_for("every bucket judged", lambda: d.status()["pipeline"]["detectors"]
                         ["oncall"]["scoring"].get("last_bucket_start_ms", 0)
                         >= t0 + (END - 1) * oncall.STEP_MS, timeout=120, interval=0.3)
                metrics = d.metrics()
                # c found the two places taken once (counted once); b was forgotten, and c
                # took its place.
                self.assertEqual(metrics['anomalyd_entity_metrics_left_out_total'
                                         '{detector="oncall"}'], 1)
                self.assertEqual(metrics['anomalyd_entity_metrics_entities{detector="oncall"}'],
                                 2)
                code, headers, body = d.get("/metrics/entities")
                self.assertEqual(code, 200)
                self.assertIn("text/plain; version=0.0.4", headers["Content-Type"])
                self.assertIn("# TYPE anomalyd_entity_surprise gauge", body)
                series = parse_metrics(body)
                self.assertEqual({k.split('instance="')[1].split('"')[0] for k in series},
                                 {"a", "c"})

                with Prometheus(d.address) as prom:
                    for family, field in (("anomalyd_entity_score", "score"),
                                          ("anomalyd_entity_surprise", "surprise"),
                                          ("anomalyd_entity_anomalous", "anomalous")):
                        got = wait_for(family + " in prometheus", lambda family=family: prom.query(
                            '%s{detector="oncall"}' % family), timeout=60, interval=0.5)
                        self.assertEqual(set(got), {"a", "c"}, family)
                        for instance, value in got.items():
                            want = float(expected[instance][field])
                            self.assertAlmostEqual(value, want, delta=1e-6 * max(1, abs(want)),
                                                   msg="%s of %s" % (family, instance))
                    # A Grafana panel's query: the surprise per entity.
                    panel = prom.query('max by (instance) (anomalyd_entity_surprise'
                                       '{detector="oncall"})')
                    self.assertEqual(set(panel), {"a", "c"})

                # A reload raises the cap: b has gone, but a third entity now gets a place.
                d.write_config(config.replace("entity_metrics_limit: 2",
                                              "entity_metrics_limit: 10"))
                d.signal(signal.SIGHUP)
                wait_for("the reload", lambda: d.find("config reloaded"), timeout=30)
                more = oncall.events(t0, range(END, END + 2), ["a", "c", "d"], rng)
                kafka.produce("logs", more + [oncall.closing_event(t0, END + 2)])
                wait_for("d's series", lambda: 'instance="d"' in d.get("/metrics/entities")[2],
                         timeout=90, interval=0.3)
                self.assertEqual(d.metric('anomalyd_entity_metrics_entities{detector="oncall"}'),
                                 4)  # a, c, d, and the closing entity zz of bucket 130


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""The Grafana dashboard (helm/anomalyd/dashboards/anomalyd.json) queries only what anomalyd
exports: every metric name in every panel's and variable's PromQL is a family in the /metrics
of a real daemon whose config uses every part the dashboard shows (a Kafka source on the mock
cluster, a Prometheus source, a detector serving a model, the Kafka, Redis and Alertmanager
sinks, the model store; /metrics/entities too). Histogram series (_bucket, _sum, _count) count as their family.

Skips (77) without kcat or redis-server.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOOLS, Daemon, KafkaMock, Redis, free_port, wait_for  # noqa: E402

SOURCE = os.environ.get("AD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(SOURCE, "helm", "anomalyd", "dashboards", "anomalyd.json")

# Words of PromQL that look like names but are not metrics.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}
TOKEN = re.compile(r"""
    (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<other>\S)
""", re.X)


def metric_names(expr):
    """The metric names an expression selects: what is left once strings, label matchers,
    ranges, grouping lists and function names are taken out."""
    # Grafana's label_values(expr, label): only the expression selects metrics.
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", expr, re.S)
    if m:
        expr = m.group(1)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    tokens = list(TOKEN.finditer(expr))
    for i, t in enumerate(tokens):
        name = t.group("name")
        if not name or name in KEYWORDS:
            continue
        following = tokens[i + 1].group() if i + 1 < len(tokens) else ""
        if following == "(":
            continue  # a function or an aggregation
        names.add(name)
    return names


def queries(dashboard):
    """Every PromQL expression of the dashboard: panel targets (rows' panels too) and query
    variables."""
    out = []

    def walk(panels):
        for p in panels:
            out.extend(("panel %r" % p.get("title"), t["expr"]) for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append(("variable %r" % v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def exported_families(text):
    """{family: type} from the exposition format's TYPE lines."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            families[name] = kind
    return families


def exported(name, families):
    if name in families:
        return True
    for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                          ("_count", {"histogram", "summary"})):
        if name.endswith(suffix) and families.get(name[:-len(suffix)]) in kinds:
            return True
    return False


CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 5s
kafka:
  brokers: "{brokers}"
  group_id: dashboard
sources:
  - name: app
    kafka:
      topics: [logs]
      time: {{path: ts, format: unix_ms}}
      labels: {{instance: instance}}
      features:
        requests: count
        errors: count_if status >= 500
  - name: prom
    prometheus:
      url: http://127.0.0.1:{prom_port}
      queries:
        cpu: sum by (instance) (rate(cpu_seconds_total[1m]))
      step: 10s
detectors:
  - name: api
    keys: [instance]
    features: [app.requests, app.errors, prom.cpu]
    step: 10s
    window: 80s
sinks:
  kafka: {{topic: alerts}}
  redis: {{url: "{redis}"}}
  alertmanager: {{urls: ["http://127.0.0.1:{am_port}"]}}
scoring:
  backend: cpu
model_store: {{path: {store}, redis_channel: models}}
"""


class Extractor(unittest.TestCase):
    """The extractor must find names where they are, or the check below proves nothing."""

    def test_names(self):
        cases = {
            'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="y",z=~"$v"}'
            '[$__rate_interval])))': {"a_seconds_bucket"},
            "time() - max by (detector) (w_seconds{job=~\"$job\"} > 0)": {"w_seconds"},
            "sum(rate(d_sum[5m])) / sum(rate(d_count[5m]))": {"d_sum", "d_count"},
            'x_total == 1 and on(instance) group_left(version) y_info{a="by (b)"}':
                {"x_total", "y_info"},
            "count by (version, cuda) (b_info == 1)": {"b_info"},
            'label_values(b_info{job=~"$job"}, instance)': {"b_info"},
            "rate(process_cpu_seconds_total[1h] offset 1d)": {"process_cpu_seconds_total"},
        }
        for expr, want in cases.items():
            self.assertEqual(metric_names(expr), want, expr)

    def test_exported(self):
        fams = {"a_seconds": "histogram", "c_total": "counter"}
        self.assertTrue(exported("a_seconds_bucket", fams))
        self.assertTrue(exported("a_seconds_count", fams))
        self.assertTrue(exported("c_total", fams))
        self.assertFalse(exported("c_total_sum", fams))
        self.assertFalse(exported("missing_total", fams))


class Dashboard(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)

    def test_shape(self):
        d = self.dashboard
        self.assertEqual(d["uid"], "anomalyd")
        ids = []

        def walk(panels):
            for p in panels:
                ids.append(p["id"])
                if p["type"] != "row":
                    self.assertTrue(p.get("targets"), p["title"])
                    self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
                walk(p.get("panels", []))

        walk(d["panels"])
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        names = {v["name"] for v in d["templating"]["list"]}
        self.assertLessEqual({"datasource", "job", "instance", "detector"}, names)
        # The list: each has a panel.
        titles = " | ".join(p["title"] for p in d["panels"]).lower()
        for topic in ["ingest rate", "rejects by reason", "watermark lag", "windows scored",
                      "scoring latency", "alerts by state", "model versions", "sink queues",
                      "surprise per entity"]:
            self.assertIn(topic, titles)

    def test_every_metric_is_exported(self):
        for tool in ("kcat", "redis-server"):
            if not shutil.which(tool):
                self.skipTest(tool + " is not installed")
        wanted = {}
        for where, expr in queries(self.dashboard):
            for name in metric_names(expr):
                wanted.setdefault(name, where)
        self.assertGreaterEqual(len(wanted), 40, sorted(wanted))
        foreign = sorted(n for n in wanted if not n.startswith(("anomalyd_", "process_")))
        self.assertEqual(foreign, [], "the dashboard shows anomalyd's own metrics only")

        folder = tempfile.mkdtemp(prefix="anomalyd-dashboard-")
        self.addCleanup(shutil.rmtree, folder, True)
        store = os.path.join(folder, "models")
        subprocess.run([os.path.join(TOOLS, "model-write"), store, "api", "v1", "8", "10000",
                        "app.requests", "app.errors", "prom.cpu"], check=True, timeout=60)
        with KafkaMock("logs", "alerts") as kafka, Redis() as redis:
            config = CONFIG.format(brokers=kafka.bootstrap, redis=redis.url, store=store,
                                   prom_port=free_port(), am_port=free_port())
            with Daemon(config) as d:
                wait_for("the model to be served",
                         lambda: d.metric('anomalyd_model_info{detector="api",model="api",'
                                          'version="v1"}') == 1, timeout=30)
                wait_for("the Redis sink", lambda: d.metric(
                    'anomalyd_redis_connected{connection="sink"}') == 1, timeout=30)
                _, _, body = d.get("/metrics")
                # The entities' scores are served apart (docs/entity-metrics.md).
                _, _, entities = d.get("/metrics/entities")
        families = exported_families(body + entities)
        missing = sorted("%s (%s)" % (n, where) for n, where in wanted.items()
                         if not exported(n, families))
        self.assertEqual(missing, [], "queried by the dashboard but not in /metrics")


if __name__ == "__main__":
    unittest.main(verbosity=2)

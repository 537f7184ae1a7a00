"""What the on-call tests share (Alertmanager, entity metrics, maintenance windows, feedback):
a detector judged by its seasonal baseline alone, so that an incident alerts after a day of
history without a trained model, its events three days back in event time on a 30-minute grid,
and a real prometheus-alertmanager on loopback. Standard library only."""

import http.server
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

from harness import TOOLS, free_port, wait_for

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
AMTOOL = "/usr/bin/amtool"
STEP_MS = 30 * 60 * 1000
T = 4
DAY = 48  # buckets

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
      time: {{path: ts, format: unix_ms, max_past: 5d}}
      labels: {{instance: instance}}
      features:
        requests: count
detectors:
  - name: oncall
    keys: [instance]
    features: [app.requests]
    streams: [seasonal]
    step: 30m
    window: 2h
    allowed_lateness: 0s
    source_idle_timeout: 1h
    entity_idle_timeout: 1h
    alert: {{for: 1, resolve_for: 2, repeat_interval: 0s, flap_threshold: 1}}
model_store: {{path: {store}}}
scoring: {{backend: cpu}}
{extra}"""


def t0(now_ms):
    """The first bucket: three days back, on the grid."""
    return (now_ms - 3 * 86400_000) // STEP_MS * STEP_MS


def write_model(store):
    """A model for the detector (random weights, model-write): the seasonal baseline alone
    judges, but a replay wants a model to score with."""
    subprocess.run([os.path.join(TOOLS, "model-write"), store, "oncall", "v1", str(T),
                    str(STEP_MS), "app.requests"], check=True, timeout=60)


def count(bucket, entity, rng):
    """Requests of an entity in a bucket: a daily shape and a little noise. Every other day
    runs 2 higher, so that no value repeats the one of the day before exactly: the seasonal
    baseline's scale of a feature starts from its first distance, and one of 0 would make the
    next small change look infinitely far."""
    hour = (bucket % DAY) / 2
    base = 20 + (6 if 8 <= hour < 20 else 0) + 3 * (entity % 3) + 2 * ((bucket // DAY) % 2)
    return base + rng.randrange(0, 2)


def events(t0_ms, buckets, entities, rng, incidents=()):
    """(key, json) of every request of the entities (names) in the buckets, in time order;
    incidents is (entity, buckets) pairs whose counts are ten times as high."""
    lines = []
    # The incidents' extra events draw from a generator of their own, so that the same seed
    # gives the same events outside them with or without an incident.
    extra_rng = random.Random(rng.random())
    for b in buckets:
        for e, name in enumerate(entities):
            n = count(b, e, rng)
            extra = 0
            if any(name == who and b in when for who, when in incidents):
                extra = 9 * n
            for i in range(n + extra):
                t = t0_ms + b * STEP_MS + (rng if i < n else extra_rng).randrange(0, STEP_MS)
                lines.append((t, name, json.dumps({"ts": t, "instance": name})))
    lines.sort()
    return [(key, text) for _, key, text in lines]


def closing_event(t0_ms, bucket, entity="zz"):
    """One event in `bucket`, so that every bucket before it closes."""
    t = t0_ms + bucket * STEP_MS
    return (entity, json.dumps({"ts": t, "instance": entity}))


def closed_events(lines, t0_ms, open_bucket):
    return sum(1 for _, text in lines if json.loads(text)["ts"] < t0_ms + open_bucket * STEP_MS)


class Webhook:
    """An HTTP server on loopback that keeps what Alertmanager's webhook receiver posts."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, alertname, instance):
        """The states notified for one alert, in order: ["firing", "resolved"]."""
        out = []
        with self.lock:
            for post in self.posts:
                for a in post["alerts"]:
                    if (a["labels"].get("alertname") == alertname
                            and a["labels"].get("instance") == instance):
                        out.append(a["status"])
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    """A real prometheus-alertmanager on loopback (clustering off), with a webhook receiver
    that notifies firing and resolved alerts at once."""

    def __init__(self, webhook=None):
        self.dir = tempfile.mkdtemp(prefix="anomalyd-am-")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        receiver = ("{name: hook, webhook_configs: [{url: '%s', send_resolved: true}]}"
                    % webhook.url if webhook else "{name: hook}")
        with open(os.path.join(self.dir, "am.yml"), "w") as f:
            f.write("route: {receiver: hook, group_by: ['...'], group_wait: 0s, "
                    "group_interval: 1s, repeat_interval: 1h}\nreceivers: [%s]\n" % receiver)
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "am.log"), "a")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, "--config.file=" + os.path.join(self.dir, "am.yml"),
             "--storage.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--cluster.listen-address=",
             "--log.level=warn"], stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wait_for("alertmanager", self._ready, timeout=60, interval=0.1)

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("alertmanager exited; see " + self.log.name)
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def query(self, *matchers):
        """The active alerts amtool sees (amtool alert query -o json)."""
        r = subprocess.run([AMTOOL, "--alertmanager.url=" + self.url, "alert", "query",
                            "-o", "json", *matchers], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def post_json(address, path, doc, token=None):
    """POSTs doc to the admin endpoint; (status, parsed body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request("http://%s%s" % (address, path), data=json.dumps(doc).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body.startswith(b"{") else body.decode()


def rng(seed):
    return random.Random(seed)

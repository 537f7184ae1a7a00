#!/usr/bin/python3
"""FIFOs and other special files wherever the daemon reads a file (docs/operations.md,
"Special files"): the config file (--check-config, a reload, the config watch), a secret file,
the model store's CURRENT and a version's manifest.json and model.safetensors. Each is refused
at once with the path and what it is, counted as the failure of its kind (a failed reload, a
refused model version), /healthz keeps answering, the last good config and model keep
serving, a later good file is picked up, and SIGTERM stops within daemon.shutdown_timeout
even while the model store holds a FIFO.

Today's code blocks in open(2) on a FIFO: the loop (a reload), --check-config and the thread
that loads model versions (and a stop that waits for it) never come back. Every wait here has
a deadline, so that shows as a failure. Standard library only.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, Daemon, publish_model, wait_for  # noqa: E402

# A detector needs a source: a Prometheus that nobody answers is enough for the model store.
CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 5s
{extra}sources:
  - name: node
    prometheus:
      url: http://127.0.0.1:1
      queries: {{cpu: demo_cpu}}
detectors:
  - name: api
    keys: [instance]
    features: [node.cpu]
    step: 10s
    window: 80s
model_store: {{path: {store}, poll_interval: 1s}}
"""


def reloads(d, result):
    return d.metric('anomalyd_config_reloads_total{result="%s"}' % result) or 0


class SpecialFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="anomalyd-special-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = os.path.join(self.dir, "models")
        self.publish("v1")

    def publish(self, version, special=None):
        publish_model(self.store, os.path.join(self.dir, "staging"), "api", version, 8, 10000,
                      ["node.cpu"], special)

    def serving(self, d):
        info = [k for k, v in d.metrics().items() if k.startswith("anomalyd_model_info") and v]
        return info[0].split('version="')[1].split('"')[0] if info else None

    def test_check_config_refuses_a_fifo_at_once(self):
        fifo = os.path.join(self.dir, "anomalyd.yaml")
        os.mkfifo(fifo)
        r = subprocess.run([ANOMALYD, "--check-config", "-c", fifo], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn(fifo + ": error: cannot open: is a FIFO, not a regular file", r.stderr)
        r = subprocess.run([ANOMALYD, "--check-config", "-c", self.dir], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn(self.dir + ": error: cannot open: is a directory, not a regular file",
                      r.stderr)

    def test_the_daemon_keeps_serving(self):
        good = CONFIG.format(store=self.store, extra="")
        with Daemon(good) as d:
            wait_for("v1 to serve", lambda: self.serving(d) == "v1", timeout=30)

            # The config replaced by a FIFO: the watch's reload and a SIGHUP fail at once,
            # counted, and the running config stays.
            os.unlink(d.config)
            os.mkfifo(d.config)
            wait_for("the watch's reload to fail", lambda: reloads(d, "failure") >= 1)
            d.signal(signal.SIGHUP)
            wait_for("the SIGHUP reload to fail", lambda: reloads(d, "failure") >= 2)
            self.assertEqual(d.get("/healthz")[0], 200)
            errors = [r for r in d.records() if r.get("msg") == "config error"]
            self.assertIn(d.config + ": cannot open: is a FIFO, not a regular file",
                          errors[-1]["error"])
            os.unlink(d.config)

            # A secret file that is a FIFO: refused at the key's position.
            secret = os.path.join(self.dir, "password")
            os.mkfifo(secret)
            d.write_config(CONFIG.format(store=self.store, extra=(
                "kafka:\n  brokers: 127.0.0.1:1\n  properties:\n"
                "    sasl.password: {file: %s}\n" % secret)))
            before = reloads(d, "failure")
            d.signal(signal.SIGHUP)
            wait_for("the secret's reload to fail", lambda: reloads(d, "failure") > before)
            errors = [r for r in d.records() if r.get("msg") == "config error"]
            self.assertIn(":7:27: kafka.properties[\"sasl.password\"].file: cannot read secret "
                          "file %s: is a FIFO, not a regular file" % secret, errors[-1]["error"])

            # A good file again is picked up.
            d.write_config(good.replace("window: 80s", "window: 80s\n    allowed_lateness: 1s"))
            wait_for("a good config to load", lambda: reloads(d, "success") >= 1)
            self.assertEqual(d.get("/healthz")[0], 200)

            # A version whose manifest is a FIFO, then one whose weights are a folder: refused
            # (the thread that loads versions is not blocked), v1 serves on, v4 is picked up.
            self.publish("v2", ("manifest.json", "fifo"))
            refused = 'anomalyd_model_versions_refused_total{model="api"}'
            wait_for("v2 to be refused", lambda: d.metric(refused) == 1, timeout=30)
            self.publish("v3", ("model.safetensors", "dir"))
            wait_for("v3 to be refused", lambda: d.metric(refused) == 2, timeout=30)
            why = [r["error"] for r in d.records() if r.get("msg") == "a model version was refused"]
            self.assertIn("/api/v2/manifest.json: is a FIFO, not a regular file", why[0])
            self.assertIn("/api/v3/model.safetensors: is a directory, not a regular file", why[1])
            self.assertEqual(self.serving(d), "v1")
            self.assertEqual(d.get("/healthz")[0], 200)
            self.publish("v4")
            wait_for("v4 to serve", lambda: self.serving(d) == "v4", timeout=30)

            # CURRENT itself a FIFO: a store error, counted; v4 serves on.
            current = os.path.join(self.store, "api", "CURRENT")
            os.unlink(current)
            os.mkfifo(current)
            bad = 'anomalyd_model_store_errors_total{reason="bad_current"}'
            wait_for("CURRENT to be refused", lambda: (d.metric(bad) or 0) >= 1, timeout=30)
            status = d.status()
            self.assertIn("CURRENT: is a FIFO, not a regular file", json.dumps(status))
            self.assertEqual(self.serving(d), "v4")
            os.unlink(current)

            # A FIFO manifest again, and a stop meanwhile: within shutdown_timeout, status 0.
            self.publish("v5", ("manifest.json", "fifo"))
            wait_for("v5 to be refused", lambda: d.metric(refused) == 3, timeout=30)
            d.signal(signal.SIGTERM)
            self.assertEqual(d.proc.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""A reload must not stop a detector scoring silently (docs/model-store.md, "Configs and the
model store"): a config that changes a detector's window under the model it serves is refused
by --check-config and by SIGHUP, naming the detector; the detector keeps its model and config.
Once a model for the new window is published, the same config is accepted. Standard library
and the project's model-write tool only.
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

CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 5s
  watch_config: false
sources:
  - name: node
    prometheus:
      url: http://127.0.0.1:1
      queries: {{cpu: demo_cpu}}
detectors:
  - name: api
    keys: [instance]
    features: [node.cpu]
    step: 10s
    window: {window}
model_store: {{path: {store}, poll_interval: 1s}}
"""


class ModelFit(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="anomalyd-fit-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.store = os.path.join(self.dir, "models")

    def publish(self, version, steps):
        publish_model(self.store, os.path.join(self.dir, "staging"), "api", version, steps, 10000,
                      ["node.cpu"])

    def check(self, text):
        path = os.path.join(self.dir, "check.yaml")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run([ANOMALYD, "--check-config", "-c", path], capture_output=True,
                              text=True, timeout=30)

    def test_a_window_that_no_longer_fits_is_refused(self):
        self.publish("v1", 8)
        fits = CONFIG.format(window="80s", store=self.store)
        longer = CONFIG.format(window="160s", store=self.store)
        self.assertEqual(self.check(fits).returncode, 0)
        r = self.check(longer)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("detector api", r.stderr)
        self.assertIn("does not fit 16 steps", r.stderr)

        with Daemon(fits) as d:
            wait_for("the model", lambda: d.find("serving a model"), timeout=30)
            failed = d.metric('anomalyd_config_reloads_total{result="failure"}') or 0
            d.write_config(longer)
            d.signal(signal.SIGHUP)
            wait_for("the refusal", lambda: (d.metric(
                'anomalyd_config_reloads_total{result="failure"}') or 0) > failed, timeout=30)
            self.assertTrue(any("does not fit 16 steps" in json.dumps(r) for r in d.records()),
                            "the refusal is logged with its reason")
            self.assertEqual(d.metric('anomalyd_model_info{detector="api",model="api",'
                                      'version="v1"}'), 1)
            self.assertEqual(
                d.status()["pipeline"]["detectors"]["api"]["model"].get("window"), 8)

            # A model for the new window: now the same config reloads.
            self.publish("v2", 16)
            self.assertEqual(self.check(longer).returncode, 0)
            ok = d.metric('anomalyd_config_reloads_total{result="success"}') or 0
            d.signal(signal.SIGHUP)
            wait_for("the reload", lambda: (d.metric(
                'anomalyd_config_reloads_total{result="success"}') or 0) > ok, timeout=30)
            wait_for("v2", lambda: d.metric('anomalyd_model_info{detector="api",model="api",'
                                            'version="v2"}') == 1, timeout=30)
            d.signal(signal.SIGTERM)
            self.assertEqual(d.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

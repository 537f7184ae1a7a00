#!/usr/bin/python3
"""The daemon reloads when its config file changes (daemon.watch_config), exactly as on SIGHUP:
the file is laid out as a Kubernetes ConfigMap volume and updated as the kubelet's atomic
writer does (a new timestamped folder, a `..data_tmp` link renamed over `..data`), and the
reload is observed through /status and /metrics. An invalid update changes nothing, content
that did not change reloads nothing, and `watch_config: false` turns the watch off by reload.

Run by ctest with AD_BUILD_DIR and AD_SOURCE_DIR set. Standard library only.
"""

import hashlib
import os
import shutil
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, wait_for  # noqa: E402

CONFIG = """\
daemon:
  log: {{level: info}}
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: {timeout}
  watch_config: {watch}
"""

# Longer than the daemon's debounce (300 ms) plus a scrape: time enough for a reload that
# should not happen to show.
QUIET = 1.0


class ConfigMapVolume:
    """A folder laid out as the kubelet lays out a ConfigMap volume: anomalyd.yaml ->
    ..data/anomalyd.yaml, ..data -> ..<timestamp>, swapped atomically on update."""

    def __init__(self, folder):
        self.folder = folder
        self.version = 0
        self.current = None

    @property
    def path(self):
        return os.path.join(self.folder, "anomalyd.yaml")

    def publish(self, text):
        self.version += 1
        stamp = "..2026_11_22_05_%02d_00.%d" % (self.version, 1000 + self.version)
        os.mkdir(os.path.join(self.folder, stamp))
        with open(os.path.join(self.folder, stamp, "anomalyd.yaml"), "w") as f:
            f.write(text)
        tmp = os.path.join(self.folder, "..data_tmp")
        os.symlink(stamp, tmp)
        os.replace(tmp, os.path.join(self.folder, "..data"))
        if not os.path.islink(self.path):
            # The first publish replaces the harness's plain file with the volume's link.
            link_tmp = self.path + ".link"
            os.symlink("..data/anomalyd.yaml", link_tmp)
            os.replace(link_tmp, self.path)
        if self.current:
            shutil.rmtree(os.path.join(self.folder, self.current))
        self.current = stamp


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


class ConfigWatch(unittest.TestCase):
    def setUp(self):
        self.first = CONFIG.format(timeout="5s", watch="true")
        self.d = Daemon(self.first)
        self.volume = ConfigMapVolume(self.d.dir)

    def tearDown(self):
        self.d.close()

    def reloads(self, result):
        return self.d.metric('anomalyd_config_reloads_total{result="%s"}' % result)

    def test_configmap_updates_reload(self):
        d = self.d
        status = d.status()
        self.assertEqual(status["config"]["watch"], {"enabled": True, "folders": [d.dir]})
        self.assertEqual(d.metric("anomalyd_config_watch_active"), 1)

        # The harness's plain file becomes a ConfigMap volume with the same bytes: no reload.
        self.volume.publish(self.first)
        time.sleep(QUIET)
        self.assertEqual(self.reloads("success"), 0)
        self.assertEqual(d.metric("anomalyd_config_watch_changes_total"), 0)

        # An update: reloaded, as SIGHUP would.
        second = CONFIG.format(timeout="7s", watch="true")
        self.volume.publish(second)
        wait_for("the reload", lambda: self.reloads("success") == 1, timeout=10)
        status = d.status()
        self.assertEqual(status["config"]["sha256"], sha(second))
        self.assertEqual(status["config"]["last_reload"]["result"], "success")
        self.assertEqual(d.metric("anomalyd_config_watch_changes_total"), 1)
        self.assertIsNotNone(d.find("the config file changed"))

        # An invalid update changes nothing: counted and shown as SIGHUP's failures are.
        bad = second.replace("shutdown_timeout", "shutdown_timeot")
        self.volume.publish(bad)
        wait_for("the failed reload", lambda: self.reloads("failure") == 1, timeout=10)
        status = d.status()
        self.assertEqual(status["config"]["sha256"], sha(second))
        self.assertEqual(status["config"]["last_reload"]["result"], "failure")
        self.assertIn("shutdown_timeot", status["config"]["last_reload"]["errors"][0])
        self.assertEqual(d.metric("anomalyd_config_last_reload_successful"), 0)
        # ... and it is not retried at every event: the same bytes again are no change.
        self.volume.publish(bad)
        time.sleep(QUIET)
        self.assertEqual(self.reloads("failure"), 1)

        # The fixed file goes in.
        third = CONFIG.format(timeout="9s", watch="true")
        self.volume.publish(third)
        wait_for("the second reload", lambda: self.reloads("success") == 2, timeout=10)
        self.assertEqual(d.status()["config"]["sha256"], sha(third))
        self.assertEqual(d.metric("anomalyd_config_last_reload_successful"), 1)
        self.assertEqual(self.reloads("failure"), 1)

    def test_sighup_then_watch_reloads_once(self):
        d = self.d
        second = CONFIG.format(timeout="6s", watch="true")
        d.write_config(second)
        d.signal(signal.SIGHUP)
        wait_for("the reload", lambda: self.reloads("success") == 1, timeout=10)
        time.sleep(QUIET)
        # The watch saw the same edit; the reload by signal had taken it in already.
        self.assertEqual(self.reloads("success"), 1)
        self.assertEqual(d.status()["config"]["sha256"], sha(second))

    def test_turned_off_by_reload(self):
        d = self.d
        off = CONFIG.format(timeout="5s", watch="false")
        d.write_config(off)
        wait_for("the reload", lambda: self.reloads("success") == 1, timeout=10)
        wait_for("the watch to stop", lambda: d.metric("anomalyd_config_watch_active") == 0)
        self.assertEqual(d.status()["config"]["watch"], {"enabled": False, "folders": []})

        edited = CONFIG.format(timeout="8s", watch="false")
        d.write_config(edited)
        time.sleep(QUIET)
        self.assertEqual(self.reloads("success"), 1)
        self.assertEqual(d.status()["config"]["sha256"], sha(off))
        # SIGHUP still reloads.
        d.signal(signal.SIGHUP)
        wait_for("the reload by signal", lambda: self.reloads("success") == 2, timeout=10)
        self.assertEqual(d.status()["config"]["sha256"], sha(edited))


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/python3
"""Maintenance windows (docs/maintenance.md), on the daemon's own code through `anomalyd
replay`: an incident inside a maintenance window for its entity notifies nothing, and leaves
the entity's history as it was before the window: every later window's surprise and seasonal
score equal, to the bit, those of a run under the same window without the incident, while the
same incident without the window alerts and leaves later judgements different. A recurring window (cron, in a time
zone) over the incident's time of day notifies nothing either, and other entities alert as
before. On a running daemon, /status lists the windows and which are active now, and a reload
changes them live (the pipeline is not rebuilt).

Skips (77) without kcat (the daemon part).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, Daemon, KafkaMock, wait_for  # noqa: E402
import oncall  # noqa: E402

ENTITIES = ["a", "b", "c"]
INCIDENT = ("b", range(120, 122))
OTHER = ("c", range(126, 127))  # an incident of another entity, outside every window
END = 140


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class Replays:
    """Replays of the same kind of events under several configs, in one folder."""

    def __init__(self, folder, t0):
        self.folder, self.t0 = folder, t0
        self.store = os.path.join(folder, "models")
        oncall.write_model(self.store)

    def events(self, incidents):
        rng = oncall.rng(5)  # the same noise in every run
        lines = oncall.events(self.t0, range(0, END), ENTITIES, rng, incidents)
        path = os.path.join(self.folder, "events-%d.jsonl" % len(os.listdir(self.folder)))
        with open(path, "w") as f:
            f.writelines(text + "\n" for _, text in lines)
        return path

    def run(self, name, events, extra=""):
        """(alerts, {entity: [scored windows]}) of a replay."""
        config = os.path.join(self.folder, name + ".yaml")
        with open(config, "w") as f:
            f.write(oncall.CONFIG.format(brokers="127.0.0.1:9", group="g", store=self.store,
                                         extra=extra))
        scores = os.path.join(self.folder, name + ".scores")
        out = subprocess.run([ANOMALYD, "replay", "-c", config, "--input", events, "--scores",
                              scores, "--log-level", "warn"], capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise AssertionError("replay %s failed: %s" % (name, out.stderr))
        alerts = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        windows = {}
        with open(scores) as f:
            for line in f:
                doc = json.loads(line)
                windows.setdefault(doc["labels"]["instance"], []).append(doc)
        return alerts, windows


def entities_alerted(alerts):
    return sorted({a["labels"]["instance"] for a in alerts})


class Maintenance(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="anomalyd-maintenance-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.t0 = oncall.t0(int(time.time() * 1000))
        self.replays = Replays(self.folder, self.t0)

    def window_ms(self, bucket):
        return self.t0 + bucket * oncall.STEP_MS

    def test_incident_in_a_window_leaves_no_trace(self):
        r = self.replays
        with_incident = r.events([INCIDENT, OTHER])
        without = r.events([OTHER])
        # The window [119, 124) covers the windows that end in it: the incident's (buckets 120
        # and 121 end at 121 and 122) and a little around.
        window = ("maintenance:\n  - name: db-upgrade\n    comment: CHG-1\n"
                  "    match: {instance: b}\n    start: %s\n    end: %s\n"
                  % (iso(self.window_ms(119)), iso(self.window_ms(124))))

        plain_alerts, plain = r.run("plain", with_incident)
        kept_alerts, kept = r.run("kept", with_incident, window)
        never_alerts, never = r.run("never", without, window)
        _, quiet = r.run("quiet", without)

        # Without the window the incident alerts; with it, nothing is notified for b, and the
        # other entity's incident alerts as before.
        self.assertEqual(entities_alerted(plain_alerts), ["b", "c"])
        self.assertEqual(entities_alerted(kept_alerts), ["c"])
        self.assertEqual(entities_alerted(never_alerts), ["c"])
        in_window = [w for w in kept["b"] if w.get("maintenance")]
        self.assertEqual({w["maintenance"] for w in in_window}, {"db-upgrade"})
        self.assertEqual([w["window_end_ms"] for w in in_window],
                         [self.window_ms(b) for b in range(119, 124)])
        self.assertTrue(any(w["anomalous"] for w in in_window), "the incident was judged")
        self.assertFalse(any(w.get("maintenance") for w in kept["a"] + kept["c"]))

        # After the window, b is judged as if the incident had never been: to the bit.
        def after(windows):
            return [(w["window_end_ms"], w["surprise"], w["seasonal_score"])
                    for w in windows["b"] if w["window_end_ms"] >= self.window_ms(124)]
        self.assertGreater(len(after(kept)), 10)
        self.assertEqual(after(kept), after(never))
        self.assertNotEqual(after(plain), after(quiet))
        # Before it, nothing differs either.
        before = [w["surprise"] for w in kept["b"] if w["window_end_ms"] < self.window_ms(119)]
        self.assertEqual(before, [w["surprise"] for w in never["b"]
                                  if w["window_end_ms"] < self.window_ms(119)])

    def test_recurring_window_in_a_time_zone(self):
        r = self.replays
        events = r.events([INCIDENT, OTHER])
        # Every day at the incident's local time in Berlin, for two hours.
        start = self.window_ms(120) - oncall.STEP_MS  # the start of the incident's bucket
        berlin = subprocess.run(["date", "-d", "@%d" % (start // 1000), "+%M %H"],
                                env={**os.environ, "TZ": "Europe/Berlin"}, capture_output=True,
                                text=True, check=True).stdout.split()
        window = ("maintenance:\n  - name: nightly\n    match_re: {instance: 'a|b'}\n"
                  "    schedule: '%d %d * * *'\n    duration: 2h\n    timezone: Europe/Berlin\n"
                  % (int(berlin[0]), int(berlin[1])))
        alerts, windows = r.run("recurring", events, window)
        self.assertEqual(entities_alerted(alerts), ["c"])
        per_day = {w["window_end_ms"] // 86400_000 for w in windows["b"] if w.get("maintenance")}
        self.assertGreaterEqual(len(per_day), 2, "it recurs every day")

    def test_status_and_live_reload(self):
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")
        now = int(time.time() * 1000)
        windows = ("maintenance:\n"
                   "  - name: now\n    match: {instance: b}\n    start: %s\n    end: %s\n"
                   "  - name: later\n    detectors: [oncall]\n    schedule: '0 3 * * sat'\n"
                   "    duration: 1h\n    timezone: America/New_York\n"
                   % (iso(now - 3600_000), iso(now + 3600_000)))
        with KafkaMock("logs:1") as kafka:
            config = oncall.CONFIG.format(brokers=kafka.bootstrap, group="m", store=r_store(self),
                                          extra=windows)
            with Daemon(config) as d:
                shown = d.status()["pipeline"]["maintenance"]
                self.assertEqual([w["name"] for w in shown], ["now", "later"])
                self.assertTrue(shown[0]["active"])
                self.assertEqual(shown[0]["match"], {"instance": "b"})
                self.assertIn("active_until", shown[0])
                self.assertFalse(shown[1]["active"])
                self.assertEqual(shown[1]["timezone"], "America/New_York")
                self.assertIsNotNone(shown[1]["next_start"])
                # A reload: the first window ends in the past now, a new one starts.
                d.write_config(config.replace("name: now", "name: over").replace(
                    iso(now + 3600_000), iso(now - 1800_000)))
                d.signal(signal.SIGHUP)
                wait_for("the reload", lambda: d.find("config reloaded"), timeout=30)
                shown = d.status()["pipeline"]["maintenance"]
                self.assertEqual(shown[0]["name"], "over")
                self.assertFalse(shown[0]["active"])
                self.assertFalse([r for r in d.records()
                                  if r.get("msg", "").startswith("the data path changed")])


def r_store(test):
    return test.replays.store


if __name__ == "__main__":
    unittest.main(verbosity=2)

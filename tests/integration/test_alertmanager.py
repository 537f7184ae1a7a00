#!/usr/bin/python3
"""Alerts through real Alertmanagers (docs/alertmanager.md): an HA pair, both configured in
sinks.alertmanager. An incident fires, and `amtool alert query` on each Alertmanager shows it
with anomalyd's labels and annotations; it resolves, and amtool no longer shows it while each
Alertmanager's webhook receiver was notified "firing" then "resolved". Then one Alertmanager is
down while a second incident fires and resolves: the other gets it, the Kafka offsets stop short
of the events behind it (at least once: nothing is committed before every Alertmanager has its
alerts); once it is back it gets the queued alerts in order and the offsets reach the end.

Skips (77) without kcat or prometheus-alertmanager.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, KafkaMock, wait_for  # noqa: E402
import oncall  # noqa: E402

for tool in ("kcat", oncall.ALERTMANAGER, oncall.AMTOOL):
    if not shutil.which(tool):
        print("skipped: %s is not installed" % tool)
        sys.exit(77)

ENTITIES = ["a", "b", "c"]
FIRST = ("b", range(120, 122))   # the first incident: entity and buckets
SECOND = ("c", range(134, 136))  # the second, while one Alertmanager is down


class AlertmanagerSink(unittest.TestCase):
    def test_firing_resolved_ha_pair_and_one_down(self):
        rng = oncall.rng(7)
        t0 = oncall.t0(int(time.time() * 1000))
        folder = tempfile.mkdtemp(prefix="anomalyd-am-it-")
        self.addCleanup(shutil.rmtree, folder, True)
        store = os.path.join(folder, "models")
        os.mkdir(store)
        hooks = [oncall.Webhook(), oncall.Webhook()]
        for h in hooks:
            self.addCleanup(h.close)
        with KafkaMock("logs:1") as kafka, oncall.Alertmanager(hooks[0]) as am0, \
                oncall.Alertmanager(hooks[1]) as am1:
            group = "am-%d" % rng.randrange(1 << 30)
            extra = ("sinks:\n  alertmanager:\n    urls: [%s, %s]\n    severity: page\n"
                     "    labels: {team: sre}\n    resend_interval: 2s\n"
                     "    generator_url: 'https://grafana/explore?instance={{labels.instance}}"
                     "&from={{window_start_ms}}'\n" % (am0.url, am1.url))
            config = oncall.CONFIG.format(brokers=kafka.bootstrap, group=group, store=store,
                                          extra=extra)
            with Daemon(config) as d:
                # 1. Two and a half days of history, then an incident on b.
                first = oncall.events(t0, range(0, 122), ENTITIES, rng, [FIRST])
                kafka.produce("logs", first + [oncall.closing_event(t0, 122)])
                for am in (am0, am1):
                    seen = wait_for("the alert in amtool", lambda am=am: am.query(
                        "alertname=oncall", "instance=b"), timeout=120, interval=0.5)
                    self.assertEqual(len(seen), 1)
                    alert = seen[0]
                    self.assertEqual(alert["labels"], {"alertname": "oncall", "instance": "b",
                                                       "severity": "page", "team": "sre"})
                    notes = alert["annotations"]
                    self.assertGreaterEqual(float(notes["surprise"]), 5)
                    self.assertEqual(notes["stream"], "seasonal")
                    self.assertRegex(notes["alert_id"], "^[0-9a-f]{32}$")
                    self.assertIn("app.requests", notes["top_features"])
                    self.assertIn("anomalous", notes["summary"])
                    self.assertTrue(alert["generatorURL"].startswith(
                        "https://grafana/explore?instance=b&from="))
                    self.assertEqual(alert["startsAt"][:16], time.strftime(
                        "%Y-%m-%dT%H:%M", time.gmtime((t0 + 121 * oncall.STEP_MS) / 1000)))
                # It resolves: gone from amtool, and each receiver heard firing then resolved.
                rest = oncall.events(t0, range(122, 130), ENTITIES, rng)
                rest.append(oncall.closing_event(t0, 130))
                kafka.produce("logs", rest)
                first += [oncall.closing_event(t0, 122)] + rest
                for am, hook in zip((am0, am1), hooks):
                    wait_for("the resolution in amtool", lambda am=am: am.query(
                        "alertname=oncall", "instance=b") == [], timeout=120, interval=0.5)
                    wait_for("the resolved notification", lambda hook=hook: hook.notifications(
                        "oncall", "b")[-1:] == ["resolved"], timeout=60, interval=0.2)
                    self.assertEqual(hook.notifications("oncall", "b")[0], "firing")
                closed = oncall.closed_events(first, t0, 130)
                wait_for("every closed bucket committed",
                         lambda: kafka.committed(group, "logs")[1] == closed,
                         timeout=90, interval=0.3)

                # 2. One Alertmanager is down; the second incident comes and goes.
                am1.stop()
                second = oncall.events(t0, range(130, 142), ENTITIES, rng, [SECOND])
                second.append(oncall.closing_event(t0, 142))
                kafka.produce("logs", second)
                wait_for("the second alert resolved on the Alertmanager that is up",
                         lambda: hooks[0].notifications("oncall", "c")[-1:] == ["resolved"],
                         timeout=120, interval=0.3)
                wait_for("the last bucket", lambda: d.status()["pipeline"]["detectors"]
                         ["oncall"]["scoring"].get("last_bucket_start_ms", 0)
                         >= t0 + 141 * oncall.STEP_MS, timeout=90, interval=0.3)
                sink = d.status()["pipeline"]["sinks"]["alertmanager"]
                self.assertGreater(sink["queued"], 0)
                self.assertFalse(sink["alertmanagers"][1]["up"])
                self.assertIn("last_error", sink["alertmanagers"][1])
                self.assertGreater(d.metric('anomalyd_alerts_unacknowledged{detector="oncall"}'),
                                   0)
                # The offsets wait: nothing behind the unacknowledged alerts is committed.
                committed = kafka.committed(group, "logs")[1]
                total = oncall.closed_events(first + second, t0, 142)
                self.assertLess(committed, total)

                # 3. It is back: it gets what it missed, in order, and the offsets move on.
                am1.start()
                wait_for("every alert acknowledged", lambda: d.status()["pipeline"]["sinks"]
                         ["alertmanager"]["queued"] == 0, timeout=120, interval=0.3)
                wait_for("the commits", lambda: kafka.committed(group, "logs")[1] == total,
                         timeout=90, interval=0.3)
                self.assertEqual(am1.query("alertname=oncall", "instance=c"), [])
                self.assertEqual(
                    d.metric('anomalyd_alertmanager_up{alertmanager="%s/"}' % am1.url), 1)
                ok = 'anomalyd_alertmanager_requests_total{alertmanager="%s/",kind="notify",' \
                     'result="error"}' % am1.url
                self.assertGreater(d.metric(ok), 0)
                logged = [r for r in d.records() if r.get("msg") == "alert"]
                states = [r["state"] for r in logged if r["entity"] == "instance=c"]
                self.assertEqual(states, ["firing", "resolved"])


if __name__ == "__main__":
    unittest.main(verbosity=2)

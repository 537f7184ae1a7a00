#!/usr/bin/python3
"""Operators' feedback (docs/feedback.md) on a running daemon. An incident of b fires and
resolves; b's alert is marked a false positive through the admin endpoint, and its anomalous
windows leave b's history: the next windows' surprises are those of an offline replay in which
b never had those windows, not those of a replay of what the daemon saw. c's alert is marked a
true positive over the Redis command channel. The marks are in the model store's
feedback.jsonl, and a restarted daemon still answers for them. A token guards the endpoint's
POST once configured. The reference trainer reads the marks (a second test, with torch): a
true positive's windows leave its training data, a false positive's are weighted up.

Skips (77) without kcat or redis-server.
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
from harness import ANOMALYD, SOURCE, Daemon, KafkaMock, Redis, parse_metrics, wait_for  # noqa
import oncall  # noqa: E402

for tool in ("kcat", "redis-server"):
    if not shutil.which(tool):
        print("skipped: %s is not installed" % tool)
        sys.exit(77)

ENTITIES = ["a", "b", "c"]
INCIDENTS = [("b", range(70, 72)), ("c", range(64, 65))]
FEEDBACK = "feedback:\n  redis_channel: anomalyd:marks\nsinks:\n  redis: {{url: '{redis}'}}\n"


def iso_ms(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def alerts(d, entity, state):
    return [r["id"] for r in d.records()
            if r.get("msg") == "alert" and r["entity"] == "instance=" + entity
            and r["state"] == state]


def surprise(d, entity):
    series = parse_metrics(d.get("/metrics/entities")[2])
    return series.get('anomalyd_entity_surprise{detector="oncall",instance="%s"}' % entity)


def replay_windows(folder, store, lines, name, marks=False):
    """b's scored windows in a replay of lines: {window end: surprise}. A replay reads the
    marks kept in the store, as the daemon does; without `marks` it is given an empty folder
    for them."""
    config = os.path.join(folder, name + ".yaml")
    empty = os.path.join(folder, name + "-no-marks")
    os.makedirs(empty, exist_ok=True)
    with open(config, "w") as f:
        f.write(oncall.CONFIG.format(brokers="127.0.0.1:9", group="g", store=store,
                                     extra="" if marks else "feedback: {path: %s}\n" % empty))
    events = os.path.join(folder, name + ".jsonl")
    with open(events, "w") as f:
        f.writelines(text + "\n" for _, text in lines)
    scores = os.path.join(folder, name + ".scores")
    subprocess.run([ANOMALYD, "replay", "-c", config, "--input", events, "--scores", scores,
                    "--log-level", "warn"], stdout=subprocess.DEVNULL, check=True, timeout=120)
    out = {}
    with open(scores) as f:
        for line in f:
            doc = json.loads(line)
            if doc["labels"]["instance"] == "b":
                out[doc["window_end_ms"]] = doc["surprise"]
    return out


class Feedback(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="anomalyd-feedback-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.store = os.path.join(self.folder, "models")
        oncall.write_model(self.store)
        self.t0 = oncall.t0(int(time.time() * 1000))

    def test_false_positive_history_channel_and_restart(self):
        rng = oncall.rng(9)
        t0 = self.t0
        first = oncall.events(t0, range(0, 75), ENTITIES, rng, INCIDENTS)
        later = oncall.events(t0, range(75, 77), ENTITIES, rng)
        marks_path = os.path.join(self.store, "oncall", "feedback.jsonl")
        with KafkaMock("logs:1") as kafka, Redis() as redis:
            config = oncall.CONFIG.format(brokers=kafka.bootstrap, group="fb", store=self.store,
                                          extra=FEEDBACK.format(redis=redis.url))
            config = config.replace("  shutdown_timeout: 20s\n",
                                    "  shutdown_timeout: 20s\n  admin: {listen: '127.0.0.1:0', "
                                    "token: {env: FB_TOKEN}}\n").replace(
                "  admin: {listen: \"127.0.0.1:0\"}\n", "")
            env = {"FB_TOKEN": "t0ken"}
            with Daemon(config, env=env) as d:
                kafka.produce("logs", first + [oncall.closing_event(t0, 75)])
                wait_for("b resolved", lambda: alerts(d, "b", "resolved"), timeout=120,
                         interval=0.3)
                wait_for("c resolved", lambda: alerts(d, "c", "resolved"), timeout=30,
                         interval=0.3)
                wait_for("every bucket before 75", lambda: d.status()["pipeline"]["detectors"]
                         ["oncall"]["scoring"].get("last_bucket_start_ms", 0)
                         >= t0 + 74 * oncall.STEP_MS, timeout=60, interval=0.3)
                b_fired, c_fired = alerts(d, "b", "firing")[0], alerts(d, "c", "firing")[0]

                # The token is required; an unknown id is 404; a bad body is 400.
                path = "/alerts/%s/feedback" % b_fired
                self.assertEqual(oncall.post_json(d.address, path, {"verdict": "false_positive"})
                                 [0], 403)
                status, body = oncall.post_json(d.address, "/alerts/%s/feedback" % ("0" * 32),
                                                {"verdict": "false_positive"}, "t0ken")
                self.assertEqual(status, 404, body)
                status, body = oncall.post_json(d.address, path, {"verdict": "maybe"}, "t0ken")
                self.assertEqual(status, 400, body)
                self.assertEqual(d.get(path)[0], 404)  # no mark yet

                # b's alert is a false positive: its two anomalous windows leave the history.
                status, body = oncall.post_json(d.address, path, {
                    "verdict": "false_positive", "comment": "a load test"}, "t0ken")
                self.assertEqual(status, 200, body)
                self.assertEqual(body["detector"], "oncall")
                self.assertEqual(body["mark"]["verdict"], "false_positive")
                self.assertEqual(body["mark"]["comment"], "a load test")
                self.assertEqual(body["mark"]["labels"], {"instance": "b"})
                self.assertEqual(body["mark"]["from_ms"], t0 + 71 * oncall.STEP_MS)
                self.assertEqual(body["mark"]["through_ms"], t0 + 74 * oncall.STEP_MS)
                self.assertTrue(body["history"]["changed"])
                self.assertEqual(body["history"]["windows_removed"], 2)
                self.assertEqual(body["history"]["windows_replayed"], 3)  # buckets 72 to 74
                self.assertEqual(d.metric('anomalyd_feedback_marks_total{detector="oncall",'
                                          'verdict="false_positive"}'), 1)

                # c's alert is a true positive, over Redis.
                wait_for("the feedback channel", lambda: d.status()["pipeline"]
                         ["feedback_channel"].get("subscribed"), timeout=30, interval=0.2)
                redis.cli("PUBLISH", "anomalyd:marks", json.dumps(
                    {"id": c_fired, "verdict": "true_positive", "by": "ops-bot"}))
                wait_for("c's mark", lambda: d.get("/alerts/%s/feedback" % c_fired)[0] == 200,
                         timeout=30, interval=0.2)

                # The next windows: as if b had never had the incident's windows.
                kafka.produce("logs", later + [oncall.closing_event(t0, 77)])
                end = t0 + 77 * oncall.STEP_MS
                wait_for("b's window ending at bucket 77", lambda: d.status()["pipeline"]
                         ["detectors"]["oncall"]["scoring"].get("last_bucket_start_ms", 0)
                         >= t0 + 76 * oncall.STEP_MS, timeout=60, interval=0.3)
                got = surprise(d, "b")
            all_lines = first + [oncall.closing_event(t0, 75)] + later + \
                [oncall.closing_event(t0, 77)]
            unmarked = replay_windows(self.folder, self.store, all_lines, "unmarked")
            incident = [t0 + b * oncall.STEP_MS for b in (70, 71)]
            never = replay_windows(self.folder, self.store, [
                (k, text) for k, text in all_lines
                if not (k == "b" and any(s <= json.loads(text)["ts"] < s + oncall.STEP_MS
                                         for s in incident))], "never")
            self.assertAlmostEqual(got, never[end], delta=1e-7 * max(1, abs(never[end])))
            self.assertNotAlmostEqual(got, unmarked[end], delta=1e-3 * abs(unmarked[end]))
            # A replay (or a restart that rebuilds the windows) reads the marks and keeps the
            # false positive's windows out as they come.
            with_marks = replay_windows(self.folder, self.store, all_lines, "marks", marks=True)
            self.assertAlmostEqual(with_marks[end], never[end], delta=1e-9)

            # Kept: one line per mark, read back by a restarted daemon.
            with open(marks_path) as f:
                kept = [json.loads(line) for line in f]
            self.assertEqual([(m["id"], m["verdict"]) for m in kept],
                             [(b_fired, "false_positive"), (c_fired, "true_positive")])
            self.assertEqual(kept[1]["by"], "redis ops-bot")
            # The true positive as a labelled incident for the quality evaluation.
            out = subprocess.run(["/usr/bin/python3",
                                  os.path.join(SOURCE, "train", "feedback_incidents.py"),
                                  marks_path], capture_output=True, text=True, check=True)
            start = kept[1]["from_ms"] - oncall.STEP_MS
            self.assertEqual(out.stdout.splitlines(), [
                "series,start,end", "c,%s,%s" % (iso_ms(start), iso_ms(kept[1]["through_ms"]))])
            with Daemon(config, env=env) as again:
                code, _, body = again.get("/alerts/%s/feedback" % b_fired)
                self.assertEqual(code, 200)
                self.assertEqual(json.loads(body)["mark"]["verdict"], "false_positive")
                code, _, body = again.get("/alerts/%s/feedback" % c_fired)
                self.assertEqual(json.loads(body)["mark"]["verdict"], "true_positive")
                fb = again.status()["pipeline"]["detectors"]["oncall"]["feedback"]
                self.assertEqual((fb["false_positives"], fb["true_positives"]), (1, 1))


class FeedbackTraining(unittest.TestCase):
    """The trainer's --feedback on a daemon's export and marks."""

    def test_trainer_reads_the_marks(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            self.skipTest("torch is not installed")
        folder = tempfile.mkdtemp(prefix="anomalyd-feedback-train-")
        self.addCleanup(shutil.rmtree, folder, True)
        store = os.path.join(folder, "models")
        oncall.write_model(store)
        export = os.path.join(folder, "windows.jsonl")
        t0 = oncall.t0(int(time.time() * 1000))
        rng = oncall.rng(9)
        lines = oncall.events(t0, range(0, 75), ENTITIES, rng, INCIDENTS)
        with KafkaMock("logs:1") as kafka:
            config = oncall.CONFIG.format(brokers=kafka.bootstrap, group="fbt", store=store,
                                          extra="").replace(
                "    streams: [seasonal]\n",
                "    streams: [seasonal]\n    export_path: %s\n" % export)
            with Daemon(config) as d:
                kafka.produce("logs", lines + [oncall.closing_event(t0, 75)])
                wait_for("both resolved", lambda: alerts(d, "b", "resolved") and
                         alerts(d, "c", "resolved"), timeout=120, interval=0.3)
                for entity, verdict in (("b", "false_positive"), ("c", "true_positive")):
                    status, body = oncall.post_json(
                        d.address, "/alerts/%s/feedback" % alerts(d, entity, "firing")[0],
                        {"verdict": verdict})
                    self.assertEqual(status, 200, body)
        marks = os.path.join(store, "oncall", "feedback.jsonl")

        def manifest(*extra):
            r = subprocess.run(
                ["/usr/bin/python3", os.path.join(SOURCE, "train", "anomalyd_train.py"),
                 "--windows", export, "--model", "oncall", "--hidden", "4", "--epochs", "1",
                 "--threads", "1", "--dry-run", *extra], capture_output=True, text=True,
                timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)["training"]

        plain, marked = manifest(), manifest("--feedback", marks, "--validation", "0.02")
        plain = manifest("--validation", "0.02")
        # What docs/feedback.md says the marks cover: the windows of the mark's entity whose
        # end lies in [from_ms, through_ms].
        with open(marks) as f:
            kept = [json.loads(line) for line in f]
        inside = {"true_positive": 0, "false_positive": 0}
        with open(export) as f:
            for line in f:
                w = json.loads(line)
                end = w["bucket_start_ms"] + w["step_ms"]
                for m in kept:
                    if w["labels"] == m["labels"] and m["from_ms"] <= end <= m["through_ms"]:
                        inside[m["verdict"]] += 1
        self.assertGreater(inside["true_positive"], 0)
        self.assertGreater(inside["false_positive"], 0)
        fb = marked["feedback"]
        self.assertEqual(fb["marks"], 2)
        self.assertEqual(fb["true_positive_windows_left_out"], inside["true_positive"])
        self.assertEqual(fb["false_positive_windows"], inside["false_positive"])
        self.assertGreater(fb["false_positive_windows_weighted"], 0)
        self.assertEqual(fb["false_positive_weight"], 3)
        # The true positive's windows left the data; the false positive's stayed.
        self.assertEqual(marked["windows"], plain["windows"] - inside["true_positive"])
        self.assertNotIn("feedback", plain)
        self.assertNotEqual(marked["train_loss"], plain["train_loss"])

if __name__ == "__main__":
    unittest.main(verbosity=2)

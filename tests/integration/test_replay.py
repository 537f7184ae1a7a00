#!/usr/bin/python3
"""The offline replay (docs/replay.md), end to end: a tiny model trained by the reference
trainer on a CSV of normal traffic, then `anomalyd replay` over log events with an injected
incident and some bad lines. The alerts must be exactly the ones recomputed here from the
events alone: windows laid out as docs/windows.md says, scored with torch, surprises as
docs/scoring.md says, the state machine of docs/alerts.md, ids from their SHA-256. Replaying
again must write the same bytes; so must a CSV of the same buckets, standard input, and the
model named with --model-dir, or a named pipe. Bad lines are counted in the summary by reason and logged once
per reason with their file and line, and lose no good line. Usage errors exit 2, a missing
model 1.

Skips (77) without torch.
"""

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, SOURCE, Daemon, KafkaMock, wait_for  # noqa: E402

try:
    import numpy as np  # noqa: F401 (test_scoring's helpers need it)
    import torch  # noqa: F401
except ImportError:
    print("skipped: torch or numpy is not installed")
    sys.exit(77)

# The model, the score and the surprise as test_scoring recomputes them.
from test_scoring import Judge, load_model, score_here  # noqa: E402

STEP_MS = 10_000
T = 8
T0_MS = 1_795_323_600_000  # 2026-11-22T04:00:00Z, on the grid
ENTITIES = ["api-%d" % i for i in range(6)]
TRAIN_BUCKETS = 300
REPLAY_BUCKETS = 90
# The entity and the buckets of the injected incident, in the replayed span.
INCIDENT = ("api-3", range(TRAIN_BUCKETS + 50, TRAIN_BUCKETS + 53))
FOR, RESOLVE_FOR = 2, 2
SURPRISE_THRESHOLD = 5.0  # the default
FEATURES = ["app.requests", "app.errors"]

# The daemon's config: a replay ignores the daemon, kafka and sinks sections (and max_past).
CONFIG = """\
daemon:
  admin: {{listen: "127.0.0.1:0"}}
  shutdown_timeout: 20s
kafka:
  brokers: "{brokers}"
  group_id: replay-test
sources:
  - name: app
    kafka:
      topics: [logs]
      max_message_bytes: 4KiB
      time: {{path: ts, format: unix_ms, max_past: 365d}}
      labels: {{instance: instance}}
      filters: ["kind != debug"]
      features:
        requests: count
        errors: count_if status >= 500
detectors:
  - name: api
    keys: [instance]
    features: [app.requests, app.errors]
    step: 10s
    window: 80s
    allowed_lateness: 0s
    source_idle_timeout: 1h
    entity_idle_timeout: 1h
    alert: {{for: {for_}, resolve_for: {resolve_for}, repeat_interval: 0s, flap_threshold: 1}}
sinks:
  kafka: {{topic: alerts}}
scoring:
  backend: cpu
  max_batch: 4
model_store: {{path: {store}}}
"""


# The same detector for a CSV backtest: no source at all.
BARE_CONFIG = """\
detectors:
  - name: api
    keys: [instance]
    features: [app.requests, app.errors]
    fill: {{app.requests: zero, app.errors: zero}}
    step: 10s
    window: 80s
    allowed_lateness: 0s
    source_idle_timeout: 1h
    entity_idle_timeout: 1h
    alert: {{for: {for_}, resolve_for: {resolve_for}, repeat_interval: 0s, flap_threshold: 1}}
scoring:
  backend: cpu
  max_batch: 4
model_store: {{path: {store}}}
"""


def config_text(store, brokers="127.0.0.1:9"):
    return CONFIG.format(store=store, brokers=brokers, for_=FOR, resolve_for=RESOLVE_FOR)


def counts_for(rng, buckets, incident=True):
    """Requests and errors per (bucket, instance): a cycle, noise, and the incident."""
    out = {}
    for b in buckets:
        for e, instance in enumerate(ENTITIES):
            n = int(8 + 4 * math.sin(2 * math.pi * (b + e) / 12) + rng.randrange(0, 2))
            errors = 1 if rng.random() < 0.2 else 0
            if incident and instance == INCIDENT[0] and b in INCIDENT[1]:
                n, errors = 40, 30
            out[(b, instance)] = (n, errors)
    return out


def events_for(counts, rng):
    """The log lines behind the counts, in time order, with debug lines the filter drops."""
    events = []
    for (b, instance), (n, errors) in counts.items():
        for i in range(n):
            t = T0_MS + b * STEP_MS + rng.randrange(0, STEP_MS)
            events.append((t, json.dumps({"ts": t, "instance": instance,
                                          "status": 503 if i < errors else 200})))
        t = T0_MS + b * STEP_MS + rng.randrange(0, STEP_MS)
        events.append((t, json.dumps({"ts": t, "instance": instance, "kind": "debug"})))
    events.sort(key=lambda e: e[0])
    return [line for _, line in events]


def csv_for(counts):
    """The same buckets as rows of the trainer's and the replay's CSV, in time order."""
    lines = ["time_ms,instance," + ",".join(FEATURES)]
    for (b, instance), (n, errors) in sorted(counts.items()):
        lines.append("%d,%s,%d,%d" % (T0_MS + b * STEP_MS, instance, n, errors))
    return lines


def rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        "%03dZ" % (ms % 1000)


def parse_time(text):
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000)


def alert_id(detector, key, end_ms, version):
    """docs/alerts.md, "Ids"."""
    h = hashlib.sha256()
    for part in (detector.encode(), key.encode()):
        h.update(len(part).to_bytes(8, "big") + part)
    h.update(end_ms.to_bytes(8, "big"))
    h.update(len(version.encode()).to_bytes(8, "big") + version.encode())
    return h.hexdigest()[:32]


def expected_alerts(counts, model_dir):
    """What the daemon makes of these buckets, recomputed from docs/windows.md, scoring.md
    and alerts.md. Returns the alerts and how close any window came to a threshold: the
    smallest distance of a surprise to its threshold."""
    manifest, lstm, head = load_model(model_dir)
    judge = Judge(len(FEATURES), STEP_MS)
    version = manifest["version"]
    buckets = sorted({b for b, _ in counts})
    state = {i: {"state": "inactive", "run": 0} for i in ENTITIES}
    # Where each entity's history starts at each bucket with data: its first data, or again
    # after a silence of a window or more (docs/alerts.md, "Warm-up").
    history_start, last_data = {}, {}
    for b, instance in sorted(counts):
        if instance not in last_data or last_data[instance] < b - T + 1:
            history_start[instance] = b
        last_data[instance] = b
        history_start[(b, instance)] = history_start[instance]
    alerts, margin = [], float("inf")
    # Every bucket from the first to the newest closes (the last at the end of the input);
    # each entity with data within the window's span makes one window of it.
    for b in range(buckets[0], buckets[-1] + 1):
        for instance in ENTITIES:
            span = range(b - T + 1, b + 1)
            if not any((k, instance) in counts for k in span):
                continue
            values = [list(counts.get((k, instance), (0, 0))) for k in span]
            mask = [[1, 1] if (k, instance) in counts else [0, 0] for k in span]
            if not any(mask[-1]):
                continue  # nothing new in the newest bucket: not scored
            score = score_here(manifest, lstm, head, {"values": values, "mask": mask,
                                                      "bucket_start_ms": T0_MS + b * STEP_MS})
            surprise, _ = judge.window(instance, T0_MS + b * STEP_MS, values[-1], mask[-1],
                                       score, manifest["calibration"])
            margin = min(margin, abs(surprise - SURPRISE_THRESHOLD))
            if b - history_start[(b, instance)] + 1 < T:
                continue  # warm-up, the start of the entity's history: not alerted on
            anomalous = surprise >= SURPRISE_THRESHOLD
            end_ms = T0_MS + (b + 1) * STEP_MS
            s = state[instance]
            made = None
            if s["state"] == "firing":
                s["run"] = 0 if anomalous else s["run"] + 1
                if s["run"] >= RESOLVE_FOR:
                    made, s["state"], s["run"] = "resolved", "inactive", 0
            elif not anomalous:
                s["state"], s["run"] = "inactive", 0
            else:
                s["run"] += 1
                s["state"] = "pending"
                if s["run"] >= FOR:
                    made, s["state"], s["run"], s["starts_at"] = "firing", "firing", 0, end_ms
            if made:
                alerts.append({
                    "id": alert_id("api", instance, end_ms, version), "state": made,
                    "reason": "anomalous" if made == "firing" else "normal",
                    "entity": "instance=" + instance, "window_end": rfc3339(end_ms),
                    "window_start": rfc3339(end_ms - T * STEP_MS),
                    "starts_at": rfc3339(s["starts_at"]), "model_version": version,
                    "notified_at": rfc3339(end_ms), "score": score, "surprise": surprise})
    return alerts, margin


class Replay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="anomalyd-replay-")
        cls.store = os.path.join(cls.dir, "models")
        os.mkdir(cls.store)
        cls.config = cls.write("anomalyd.yaml", config_text(cls.store))
        rng = random.Random(5)
        train = cls.write("train.csv", "\n".join(
            csv_for(counts_for(rng, range(TRAIN_BUCKETS), incident=False))) + "\n")
        trained = subprocess.run(
            ["/usr/bin/python3", os.path.join(SOURCE, "train", "anomalyd_train.py"),
             "--csv", train, "--window", str(T), "--step-ms", str(STEP_MS), "--fill", "zero",
             "--features", ",".join(FEATURES), "--store", cls.store, "--model", "api",
             "--version", "v1", "--hidden", "16", "--epochs", "30", "--seed", "3",
             "--threads", "1"], capture_output=True, text=True, timeout=240)
        assert trained.returncode == 0, trained.stderr
        cls.model_dir = os.path.join(cls.store, "api", "v1")
        # The replayed traffic starts after the training's, on the same cycle.
        cls.counts = counts_for(rng, range(TRAIN_BUCKETS, TRAIN_BUCKETS + REPLAY_BUCKETS))
        cls.events = events_for(cls.counts, rng)
        cls.clean = cls.write("events.jsonl", "\n".join(cls.events) + "\n")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def replay(self, *args, stdin=None, config=None):
        r = subprocess.run([ANOMALYD, "replay", "-c", config or self.config,
                            "--log-format", "json", *args],
                           input=stdin, capture_output=True, timeout=120)
        records = []
        for line in r.stderr.decode().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                self.fail("replay wrote a line that is not a log record (a sanitizer's "
                          "report?):\n" + r.stderr.decode())
        return r.returncode, r.stdout, records

    def summary(self, records):
        found = [r for r in records if r.get("msg") == "replay finished"]
        self.assertEqual(len(found), 1, records)
        return found[0]

    def ok(self, *args, **kwargs):
        rc, out, records = self.replay(*args, **kwargs)
        self.assertEqual(rc, 0, records)
        return out, records

    def test_alerts_are_the_ones_recomputed(self):
        out, records = self.ok("--input", self.clean)
        want, margin = expected_alerts(self.counts, self.model_dir)
        # Scores agree with torch's to about 1e-6 (single precision); surprises follow them.
        self.assertTrue(margin > 1e-3,
                        "a window sits on the threshold (%g away): whether it is anomalous would "
                        "be down to rounding; change the seed" % margin)
        got = [json.loads(line) for line in out.decode().splitlines()]
        # The incident fires, and resolves once it is over.
        incident = [a for a in want if a["entity"] == "instance=" + INCIDENT[0]]
        self.assertEqual([a["state"] for a in incident][:2], ["firing", "resolved"])
        self.assertEqual(incident[0]["window_end"],
                         rfc3339(T0_MS + (INCIDENT[1][0] + FOR) * STEP_MS))
        keys = ["id", "state", "reason", "entity", "window_start", "window_end", "starts_at",
                "model_version", "notified_at"]
        self.assertEqual([{k: a[k] for k in keys} for a in got],
                         [{k: a[k] for k in keys} for a in want])
        for a, w in zip(got, want):
            self.assertAlmostEqual(a["score"], w["score"], delta=1e-4 * max(1, w["score"]))
            self.assertAlmostEqual(a["surprise"], w["surprise"], delta=1e-4 * max(1, w["surprise"]))
            self.assertEqual((a["detector"], a["model"], a["labels"], a["flapping"]),
                             ("api", "api", {"instance": a["entity"][len("instance="):]}, False))
        s = self.summary(records)
        self.assertEqual((s["events"], s["rejected"], s["late"], s["alerts"],
                          s["alerts_firing"], s["alerts_resolved"], s["unscored_failed"]),
                         (sum(n for n, _ in self.counts.values()), 0, 0, len(want),
                          sum(a["state"] == "firing" for a in want),
                          sum(a["state"] == "resolved" for a in want), 0))
        self.assertEqual(s["filtered"], len(self.counts))
        # Every entity has data in every bucket: one window each, all scored, the last
        # bucket's included.
        self.assertEqual((s["windows"], s["scored"], s["unscored_no_data"]),
                         (len(self.counts), len(self.counts), 0))
        times = [json.loads(line)["ts"] for line in self.events]
        self.assertEqual([parse_time(s["oldest_event"]), parse_time(s["newest_event"])],
                         [min(times), max(times)])

        # The same bytes again, from standard input, and with the version named.
        self.assertEqual(self.ok("--input", self.clean)[0], out)
        with open(self.clean, "rb") as f:
            self.assertEqual(self.ok("--input", "-", stdin=f.read())[0], out)
        self.assertEqual(self.ok("--input", self.clean, "--model-dir", self.model_dir)[0], out)
        # Split in two files read in turn, it is the same stream.
        half = len(self.events) // 2
        first = self.write("first.jsonl", "\n".join(self.events[:half]) + "\n")
        second = self.write("second.jsonl", "\n".join(self.events[half:]))  # no last newline
        self.assertEqual(self.ok("--input", first, "--input", second)[0], out)

    def test_named_pipe(self):
        """A named pipe is a legitimate input: the replay waits for its writer and reads it
        as it reads a file."""
        out, _ = self.ok("--input", self.clean)
        fifo = os.path.join(self.dir, "events.fifo")
        os.mkfifo(fifo)
        self.addCleanup(os.unlink, fifo)

        def feed():
            with open(fifo, "w") as f, open(self.clean) as src:
                f.write(src.read())

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        self.assertEqual(self.ok("--input", fifo)[0], out)
        writer.join(timeout=30)

    def test_an_input_gap_is_no_incident(self):
        # Every entity's requests go missing for 2T buckets (the input that counts them was
        # down), then come back as usual: the network predicted them from fill values, but
        # missing data is not an anomaly (docs/scoring.md, "Gaps"): no alert. The same gap in
        # an entity whose requests often go missing changes nothing either; an incident after
        # the gap still fires.
        rng = random.Random(8)
        span = range(TRAIN_BUCKETS, TRAIN_BUCKETS + 160)
        counts = counts_for(rng, span, incident=False)
        gap = range(TRAIN_BUCKETS + 120, TRAIN_BUCKETS + 120 + 2 * T)
        lines = ["time_ms,instance," + ",".join(FEATURES)]
        for (b, instance), (n, errors) in sorted(counts.items()):
            requests = "" if b in gap else str(n)
            lines.append("%d,%s,%s,%d" % (T0_MS + b * STEP_MS, instance, requests, errors))
        path = self.write("gap.csv", "\n".join(lines) + "\n")
        scores = os.path.join(self.dir, "gap-scores.jsonl")
        out, records = self.ok("--input", path, "--scores", scores)
        after = [json.loads(a) for a in out.decode().splitlines()
                 if json.loads(a)["window_end"] >= rfc3339(T0_MS + gap[0] * STEP_MS)]
        self.assertEqual(after, [], "alerts after an input gap")
        with open(scores) as f:
            judged = [json.loads(line) for line in f]
        # Back from the gap, the requests sit out of the LSTM's score until they have half a
        # window of history again; the errors, which never went missing, are judged.
        for k in range(1, T // 2):
            end = T0_MS + (gap[-1] + 1 + k) * STEP_MS
            back = [w for w in judged if w["window_end_ms"] == end]
            self.assertEqual(len(back), len(ENTITIES))
            self.assertTrue(all(w["shares"]["app.requests"] == 0 for w in back), back)

    def test_csv_of_the_same_buckets(self):
        out, _ = self.ok("--input", self.clean)
        rows = csv_for(self.counts)
        # Columns in another order, quoted, with a byte order mark, and CRLF line ends.
        header = '\ufeff"app.errors",instance,time_ms,app.requests'
        body = []
        for row in rows[1:]:
            t, instance, requests, errors = row.split(",")
            body.append('%s,"%s",%s,%s' % (errors, instance, t, requests))
        path = self.write("buckets.csv", "\r\n".join([header] + body) + "\r\n")
        csv_out, records = self.ok("--input", path)
        self.assertEqual(csv_out, out)
        s = self.summary(records)
        self.assertEqual((s["events"], s["rejected"]), (len(self.counts), 0))

        # A backtest config needs no made-up source: the CSV holds the features. (Such
        # features are gauges, filled by carrying: the counts say zero here.)
        bare = self.write("bare.yaml", BARE_CONFIG.format(
            store=self.store, for_=FOR, resolve_for=RESOLVE_FOR))
        self.assertEqual(self.ok("--input", path, config=bare)[0], out)
        check = subprocess.run([ANOMALYD, "--check-config", "-c", bare], capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(check.returncode, 2)  # the daemon still needs its sources
        self.assertIn('no source is named "app"', check.stderr)

        # Bad rows are counted and lose nothing else.
        bad = body[:40] + ["1,api-1", "x,api-1,%d,3" % (T0_MS + 40 * STEP_MS),
                           "1,api-1,soon,3", '1,"api-1,%d,3' % T0_MS] + body[40:]
        path = self.write("bad.csv", "\n".join([header] + bad) + "\n")
        rc, bad_out, records = self.replay("--input", path)
        self.assertEqual(rc, 0)
        self.assertEqual(bad_out, out)
        s = self.summary(records)
        self.assertEqual((s["rejected"], s["rejected_malformed_csv"], s["rejected_wrong_type"],
                          s["rejected_time_invalid"]), (4, 2, 1, 1))

    def test_scores(self):
        # --scores writes every scored window as the detector judged it; the alerts are
        # unchanged, and every firing alert's window is there, anomalous.
        out, _ = self.ok("--input", self.clean)
        path = os.path.join(self.dir, "scores.jsonl")
        scored_out, records = self.ok("--input", self.clean, "--scores", path)
        self.assertEqual(scored_out, out)
        with open(path) as f:
            windows = [json.loads(line) for line in f]
        self.assertEqual(len(windows), self.summary(records)["scored"])
        self.assertEqual(sum(w["anomalous"] for w in windows),
                         self.summary(records)["anomalous"])
        by_end = {(w["entity"], w["window_end"]): w for w in windows}
        for alert in map(json.loads, out.decode().splitlines()):
            w = by_end[(alert["entity"], alert["window_end"])]
            self.assertAlmostEqual(w["score"], alert["score"], places=5)
            self.assertEqual(w["anomalous"], alert["anomalous"])
            self.assertFalse(w["warming_up"])
        first = windows[0]
        self.assertEqual(set(first["shares"]), set(FEATURES))
        end = datetime.strptime(first["window_end"], "%Y-%m-%dT%H:%M:%S.%fZ")
        self.assertEqual(first["window_end_ms"],
                         int(end.replace(tzinfo=timezone.utc).timestamp() * 1000))
        self.assertTrue(any(w["warming_up"] for w in windows))

    def test_bad_lines_are_counted_and_lose_nothing(self):
        out, _ = self.ok("--input", self.clean)
        lines = list(self.events)
        late_at = len(lines) // 2
        bad = {
            10: "not json",
            11: "",
            12: "[1, 2]",
            20: '{"instance": "api-1", "status": 200}',
            30: '{"ts": "yesterday", "instance": "api-1", "status": 200}',
            40: '{"ts": %d, "instance": {"a": 1}, "status": 200}' % (T0_MS + 3_000_000),
            50: '{"ts": %d, "instance": "api-1", "pad": "%s"}' % (T0_MS + 3_000_000,
                                                                   "x" * 5000),
            60: "{also not json",
            # Accepted, but for a bucket that has closed: late, as in the daemon.
            late_at: '{"ts": %d, "instance": "api-2", "status": 500}' % (
                T0_MS + (TRAIN_BUCKETS + 5) * STEP_MS),
        }
        for at in sorted(bad, reverse=True):
            lines.insert(at, bad[at])
        path = self.write("dirty.jsonl", "\n".join(lines) + "\n")
        # At level warn: the warnings and the summary, nothing else.
        rc, dirty_out, records = self.replay("--input", path, "--log-level", "warn")
        self.assertEqual(rc, 0, records)
        self.assertEqual({r["level"] for r in records if r["msg"] != "replay finished"},
                         {"warn"})
        self.assertEqual(dirty_out, out)
        s = self.summary(records)
        want = {"rejected_malformed_json": 2, "rejected_not_an_object": 1,
                "rejected_time_missing": 1, "rejected_time_invalid": 1,
                "rejected_wrong_type": 1, "rejected_too_large": 1}
        self.assertEqual({k: v for k, v in s.items() if k.startswith("rejected_")}, want)
        self.assertEqual((s["rejected"], s["late"], s["blank"], s["lines"]),
                         (7, 1, 1, len(lines)))
        self.assertEqual(s["events"], sum(n for n, _ in self.counts.values()) + 1)
        # Logged once per reason, with the first line's place (lines count from 1).
        logged = {r["reason"]: r for r in records if r["level"] == "warn" and "reason" in r}
        self.assertEqual(set(logged), {k[len("rejected_"):] for k in want} | {"late"})
        line_of = {k: lines.index(v) + 1 for k, v in bad.items()}
        self.assertEqual((logged["malformed_json"]["file"], logged["malformed_json"]["line"]),
                         (path, line_of[10]))
        self.assertEqual(logged["too_large"]["line"], line_of[50])
        self.assertEqual(logged["late"]["line"], line_of[late_at])

    def test_a_topic_dump_as_the_docs_sort_it(self):
        """docs/replay.md's command, run as written, on a topic of four partitions: the dump
        replays as the events themselves, with nothing late; unsorted, most would be."""
        for tool in ("kcat", "jq"):
            if not shutil.which(tool):
                self.skipTest(tool + " is not installed")
        with open(os.path.join(SOURCE, "docs", "replay.md")) as f:
            doc = f.read()
        section = doc[doc.index("### A topic dump"):]
        start = section.index("```sh\n") + 6
        command = section[start:section.index("\n```", start)]
        out, _ = self.ok("--input", self.clean)
        dump = os.path.join(self.dir, "dump.jsonl")
        with KafkaMock("logs:4") as kafka:
            kafka.produce("logs", [(json.loads(line)["instance"], line)
                                   for line in self.events])
            shell = command.replace("BROKERS", kafka.bootstrap).replace("TOPIC", "logs")
            shell = shell.replace("> logs.jsonl", "> " + dump)
            subprocess.run(["bash", "-o", "pipefail", "-c", shell], check=True, timeout=60)
            raw = os.path.join(self.dir, "raw.jsonl")
            with open(raw, "w") as f:
                f.write(kafka.consume("logs", len(self.events)))
        with open(dump) as f:
            self.assertEqual(sorted(f.read().splitlines()), sorted(
                json.dumps(json.loads(line), separators=(",", ":")) for line in self.events))
        sorted_out, records = self.ok("--input", dump)
        self.assertEqual(self.summary(records)["late"], 0)
        self.assertEqual(sorted_out, out)
        _, records = self.ok("--input", raw)
        self.assertGreater(self.summary(records)["late"], len(self.events) // 10)

    def test_the_daemon_makes_the_same_alerts(self):
        """The same events through the daemon, from a one-partition topic: the same alerts,
        field for field, but for notified_at (the daemon's wall clock)."""
        if not shutil.which("kcat"):
            self.skipTest("kcat is not installed")
        out, _ = self.ok("--input", self.clean)
        want = [json.loads(line) for line in out.decode().splitlines()]
        self.assertGreater(len(want), 0)
        last = max(json.loads(line)["ts"] for line in self.events)
        with KafkaMock("logs:1", "alerts:1") as kafka:
            with Daemon(config_text(self.store, kafka.bootstrap)) as d:
                kafka.produce("logs", [("k", line) for line in self.events])
                # The daemon closes a bucket once an event of a later one has come: one more
                # event, in the next bucket, closes the last bucket the replay closes.
                kafka.produce("logs", [("k", json.dumps({
                    "ts": (last // STEP_MS + 1) * STEP_MS, "instance": "api-0",
                    "status": 200}))])

                def alerts():
                    lines = kafka.consume("alerts", len(want), timeout=10).splitlines()
                    return lines if len(lines) == len(want) else None
                got = [json.loads(line) for line in wait_for("the alerts", alerts, timeout=90,
                                                             interval=1)]
                # Nothing more: every bucket the replay closed has been handed on.
                wait_for("the last bucket", lambda: d.metric(
                    'anomalyd_windows_scored_total{detector="api"}') >= len(self.counts),
                         timeout=30)
                extra = kafka.consume("alerts", len(want) + 1, timeout=5).splitlines()
                self.assertEqual(len(extra), len(want))
        for a in got + want:
            del a["notified_at"]
        self.assertEqual(got, want)

    def test_usage_and_failures(self):
        def status(*args, config=None):
            rc, out, records = self.replay(*args, config=config)
            self.assertEqual(out, b"")
            errors = [r["error"] for r in records if r["level"] == "error" and "error" in r]
            return rc, " ".join(errors)

        rc, why = status("--input", self.clean, "--detector", "nope")
        self.assertEqual((rc, why), (2, "--detector nope: the config has no detector of that "
                                        "name"))
        rc, why = status("--input", os.path.join(self.dir, "missing.jsonl"))
        self.assertEqual(rc, 2)
        self.assertIn("missing.jsonl: No such file or directory", why)
        rc, why = status("--input", self.clean, "--source", "nope")
        self.assertEqual(rc, 2)
        header_only = self.write("wrong.csv", "time_ms,instance,app.requests,app.oops\n")
        rc, why = status("--input", header_only)
        self.assertEqual(rc, 2)
        self.assertIn('column "app.oops" is not time_ms, a key or a feature of detector api',
                      why)
        rc, why = status("--input", self.clean, "--input", header_only)
        self.assertEqual(rc, 2)
        # A folder or a device is refused before anything is read, saying what it is.
        rc, why = status("--input", self.dir)
        self.assertEqual(rc, 2)
        self.assertIn(self.dir + ": is a directory, not a regular file", why)
        rc, why = status("--input", self.clean, "--input", "/dev/zero")
        self.assertEqual(rc, 2)
        self.assertIn("/dev/zero: is a character device, not a regular file", why)
        r = subprocess.run([ANOMALYD, "replay", "-c", self.config], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("replay needs at least one --input FILE", r.stderr)

        # Without a model there is nothing to replay with: a runtime failure.
        empty = os.path.join(self.dir, "empty-store")
        os.makedirs(empty, exist_ok=True)
        config = self.write("no-model.yaml", config_text(empty))
        rc, why = status("--input", self.clean, config=config)
        self.assertEqual(rc, 1)
        self.assertIn("CURRENT does not exist", why)
        rc, why = status("--input", self.clean, "--model-dir", empty)
        self.assertEqual(rc, 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)

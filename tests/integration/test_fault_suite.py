#!/usr/bin/python3
"""The fault suite (docs/testing.md, "Fault suite"; docs/delivery.md): the daemon against what an
uninterrupted run gives, on a topic of four partitions, with both sinks.

* SIGKILL at three points of an incident (before it fires, while it fires, before it resolves),
  each followed by a restart that rebuilds its windows and alert states from the commit: every
  alert id an uninterrupted run gives (`anomalyd replay` of the same events, which is the
  daemon's code on the same windows) reaches Redis and Kafka exactly once, and no other; the
  incident's firing alert resolves, and Redis' state hash says so; no replayed event is refused.
* A SIGHUP that rebuilds the pipeline while events are being read: the new consumer joins once
  the old one has left the group, rebuilds from its last commit without refusing a replayed
  event, and the grid moves on within seconds. A SIGHUP that changes only a sink swaps that
  sink: the pipeline, its consumer and its windows stay, and the log line names the key.

Each run prints its figures (restarts, replayed, refused, duplicated, lost) as one line
starting with "fault-suite:"; docs/testing.md quotes them.

Skips (77) without kcat, redis-server or torch.
"""

import calendar
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, Daemon, KafkaMock, Redis, wait_for  # noqa: E402
import test_delivery as delivery  # noqa: E402  (skips without torch)

STEP_MS = delivery.STEP_S * 1000
T = delivery.T
ENTITIES = delivery.ENTITIES
PARTITIONS = 4
ENTITY = "api-3"
INCIDENT = (ENTITY, range(40, 56))
# The first daemon reads the buckets before KILLS[0], the next those before KILLS[1], ...:
# killed before the incident fires, while it fires, and after it ended but before it resolves.
KILLS = (41, 48, 57)
LAST = 66

# The whole history is rebuilt (rebuild_history covers it), so that the surprises, and with
# them every alert, are those of an uninterrupted run (docs/delivery.md, "What is and is not
# exact").
# A killed member's session ends after 3 s: the next daemon's group waits that long.
CONFIG = delivery.FAST_REJOIN_CONFIG.replace(
    "    source_idle_timeout: 1h\n",
    "    source_idle_timeout: 1h\n    rebuild_history: 2h\n").replace(
    "session.timeout.ms: 6000", "session.timeout.ms: 3000")


def partition_of(instance):
    return ENTITIES.index(instance) % PARTITIONS


def produce(kafka, topic, lines):
    """Each entity's events to its own partition, in time order."""
    for p in range(PARTITIONS):
        part = [(k, v) for k, v in lines if partition_of(k) == p]
        if part:
            kafka.produce(topic, part, partition=p)


def closing(t0_ms, bucket):
    """One event per partition far enough ahead that the grid passes every bucket before
    `bucket` (their own buckets stay open)."""
    return [(instance, json.dumps({"ts": t0_ms + (bucket + T) * STEP_MS, "instance": instance,
                                   "status": 200}))
            for instance in ENTITIES[:PARTITIONS]]


def closed_count(lines, t0_ms, bucket):
    """Events in the buckets before `bucket`: what is committed once the grid is there."""
    return sum(1 for _, text in lines if json.loads(text)["ts"] < t0_ms + bucket * STEP_MS)


def refusals(d):
    """Every event the window store refused, and every replayed one, by reason."""
    m = d.metrics()
    return {key: m.get(series) for key, series in (
        ("late", 'anomalyd_window_events_late_total{detector="api"}'),
        ("too_far", 'anomalyd_window_events_refused_total{detector="api",reason="too_far"}'),
        ("replayed_late", 'anomalyd_kafka_replayed_refused_total{source="app",reason="late"}'),
        ("replayed_too_far",
         'anomalyd_kafka_replayed_refused_total{source="app",reason="too_far"}'))}


NO_REFUSALS = {"late": 0, "too_far": 0, "replayed_late": 0, "replayed_too_far": 0}


class FaultSuite(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("kcat", "redis-server"):
            if not shutil.which(tool):
                raise unittest.SkipTest(tool + " is not installed")
        now_ms = int(time.time() * 1000)
        cls.t0_ms = (now_ms - 3600_000) // STEP_MS * STEP_MS
        cls.dir = tempfile.mkdtemp(prefix="anomalyd-faults-")
        cls.store = os.path.join(cls.dir, "models")
        os.mkdir(cls.store)
        delivery.train(cls.store, cls.t0_ms, cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def config(self, kafka, redis, group):
        return CONFIG.format(brokers=kafka.bootstrap, group=group, step=delivery.STEP_S,
                             window=delivery.STEP_S * T, redis=redis.url, store=self.store)

    def uninterrupted(self, config, lines):
        """The alerts an uninterrupted run gives: the daemon's code over the same events, in
        time order, with the same closing events."""
        path = os.path.join(self.dir, "events-%d.jsonl" % random.randrange(1 << 30))
        with open(path, "w") as f:
            for text in sorted((v for _, v in lines), key=lambda v: json.loads(v)["ts"]):
                f.write(text + "\n")
        cfg = os.path.join(self.dir, "replay.yaml")
        with open(cfg, "w") as f:
            f.write(config)
        r = subprocess.run([ANOMALYD, "replay", "-c", cfg, "--log-format", "json",
                            "--input", path], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def delivered(self, kafka, redis, topic, count):
        """Alert ids as Redis' stream and the Kafka topic hold them (repeats included)."""
        redis_ids = [f["id"] for _, f in redis.stream("anomalyd:alerts")]
        out = kafka.consume(topic, count + 5, fmt="%s\n", timeout=15)
        kafka_ids = [json.loads(line)["id"] for line in out.splitlines()]
        return redis_ids, kafka_ids

    def test_sigkill_at_points_of_an_incident(self):
        rng = random.Random(23)
        t0 = self.t0_ms
        with KafkaMock("logs:%d" % PARTITIONS, "alerts:1") as kafka, Redis() as redis:
            group = "faults-%d" % rng.randrange(1 << 30)
            config = self.config(kafka, redis, group)
            everything = []
            replayed = 0
            first_bucket = 0
            for stage, until in enumerate(KILLS + (LAST,)):
                lines = delivery.events_for(t0, range(first_bucket, until), rng, INCIDENT)
                everything += lines
                last = until == LAST
                produce(kafka, "logs", lines + (closing(t0, LAST) if last else []))
                # Each partition's newest bucket stays open (its watermark is in it).
                want = closed_count(everything, t0, LAST if last else until - 1)
                with Daemon(config) as d:
                    wait_for("the commit of every closed bucket",
                             lambda: kafka.committed(group, "logs")[1] == want,
                             timeout=90, interval=0.3)
                    if stage:
                        # It rebuilt from the commit, and refused nothing it read again.
                        self.assertGreater(
                            d.metric('anomalyd_kafka_replayed_messages_total{source="app"}'), 0)
                        replayed += d.metric(
                            'anomalyd_kafka_replayed_messages_total{source="app"}')
                    self.assertEqual(refusals(d), NO_REFUSALS)
                    if last:
                        d.signal(signal.SIGTERM)
                        self.assertEqual(d.proc.wait(timeout=30), 0)
                    else:
                        d.signal(signal.SIGKILL)
                        d.proc.wait(timeout=10)
                first_bucket = until

            want = self.uninterrupted(config, everything + closing(t0, LAST))
            want_ids = sorted(a["id"] for a in want)
            incident = [a for a in want if a["entity"] == "instance=" + ENTITY]
            # The run has an incident that fires before the second kill and resolves after the
            # third, and nothing else.
            self.assertEqual([a["state"] for a in incident][:2], ["firing", "resolved"])
            self.assertEqual({a["entity"] for a in want}, {"instance=" + ENTITY})
            fired = (calendar.timegm(time.strptime(incident[0]["window_end"][:19],
                                                   "%Y-%m-%dT%H:%M:%S")) * 1000 - t0) // STEP_MS
            self.assertTrue(KILLS[0] <= fired < KILLS[1], fired)

            redis_ids, kafka_ids = self.delivered(kafka, redis, "alerts", len(want_ids))
            self.assertEqual(sorted(redis_ids), want_ids, "Redis lost, doubled or made up one")
            self.assertEqual(sorted(kafka_ids), want_ids, "Kafka lost, doubled or made up one")
            state = json.loads(redis.cli("HGET", "anomalyd:state", "api|instance=" + ENTITY))
            self.assertEqual(state["state"], incident[-1]["state"])
            self.assertEqual(state["state"], "resolved")
            print("fault-suite: sigkill restarts=%d replayed=%d refused=0 duplicated=%d lost=%d "
                  "alerts=%d" % (len(KILLS), replayed,
                                 len(kafka_ids) - len(set(kafka_ids))
                                 + len(redis_ids) - len(set(redis_ids)),
                                 len(set(want_ids) - (set(redis_ids) & set(kafka_ids))),
                                 len(want_ids)), file=sys.stderr)

    def test_sighup_rebuild_under_load_and_a_sink_swap(self):
        rng = random.Random(31)
        t0 = self.t0_ms
        with KafkaMock("logs:%d" % PARTITIONS, "alerts:1") as kafka, Redis() as redis:
            group = "hup-%d" % rng.randrange(1 << 30)
            config = self.config(kafka, redis, group)
            first = delivery.events_for(t0, range(0, 30), rng, INCIDENT)
            produce(kafka, "logs", first)
            with Daemon(config) as d:
                wait_for("the first commits",
                         lambda: kafka.committed(group, "logs")[1]
                         == closed_count(first, t0, 29), timeout=90, interval=0.3)

                # 1. Under load: a backlog is being read when a change under detectors
                # rebuilds the pipeline.
                second = delivery.events_for(t0, range(30, 50), rng, INCIDENT)
                produce(kafka, "logs", second)
                d.write_config(config.replace("    source_idle_timeout: 1h\n",
                                              "    source_idle_timeout: 59m\n"))
                d.signal(signal.SIGHUP)
                hup = time.monotonic()
                rebuilt = wait_for("the rebuild", lambda: d.find(
                    "the data path changed: the pipeline is rebuilt; the new consumers join the "
                    "group once the old ones have left it, and windows are rebuilt from the "
                    "last commit's rebuild point"), timeout=30)
                self.assertEqual(rebuilt["changed"], "detectors[0].source_idle_timeout")
                both = first + second
                wait_for("the commits after the rebuild",
                         lambda: kafka.committed(group, "logs")[1]
                         == closed_count(both, t0, 49), timeout=90, interval=0.2)
                # The grid went on within seconds, not after 30-40 s.
                caught_up = time.monotonic() - hup
                self.assertLess(caught_up, 20)
                self.assertGreater(
                    d.metric('anomalyd_kafka_replayed_messages_total{source="app"}'), 0)
                self.assertEqual(refusals(d), NO_REFUSALS)
                replayed = d.metric('anomalyd_kafka_replayed_messages_total{source="app"}')
                builds = sum(1 for r in d.records() if r.get("msg") == "pipeline built")
                self.assertEqual(builds, 2)

                # 2. A change under sinks only: that sink is swapped, nothing else.
                d.write_config(config.replace("queue_limit: 1000", "queue_limit: 999")
                               .replace("    source_idle_timeout: 1h\n",
                                        "    source_idle_timeout: 59m\n"))
                d.signal(signal.SIGHUP)
                swapped = wait_for("the swap", lambda: d.find(
                    "sinks changed: only the changed sinks were replaced; sources, windows, "
                    "detectors and alert states go on as they were"), timeout=30)
                self.assertEqual(swapped["changed"], "sinks.redis.queue_limit")
                self.assertTrue(d.find("Redis sink replaced"))
                self.assertIsNone(d.find("Kafka sink replaced"))
                self.assertEqual(sum(1 for r in d.records() if r.get("msg") == "pipeline built"),
                                 2, "a sink change rebuilt the pipeline")
                self.assertEqual(d.status()["pipeline"]["sources"]["app"]["group"], "member")

                # The rest of the incident goes through the new Redis sink.
                third = delivery.events_for(t0, range(50, LAST), rng, INCIDENT)
                produce(kafka, "logs", third + closing(t0, LAST))
                everything = both + third
                wait_for("the last commits",
                         lambda: kafka.committed(group, "logs")[1] == len(everything),
                         timeout=90, interval=0.3)
                self.assertEqual(d.metric('anomalyd_kafka_replayed_messages_total{source="app"}'),
                                 replayed, "a sink change read events again")
                self.assertEqual(refusals(d), NO_REFUSALS)
                d.signal(signal.SIGTERM)
                self.assertEqual(d.proc.wait(timeout=30), 0)

            want = sorted(a["id"] for a in self.uninterrupted(config,
                                                                everything + closing(t0, LAST)))
            self.assertTrue(want)
            redis_ids, kafka_ids = self.delivered(kafka, redis, "alerts", len(want))
            self.assertEqual(sorted(redis_ids), want)
            self.assertEqual(sorted(kafka_ids), want)
            print("fault-suite: sighup rebuilds=1 sink_swaps=1 replayed=%d refused=0 "
                  "duplicated=0 lost=0 alerts=%d caught_up_s=%.1f"
                  % (replayed, len(want), caught_up), file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

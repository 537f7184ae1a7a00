#!/usr/bin/python3
"""train/quality_scoring.py, the evaluation's scorer (docs/quality.md), on cases small enough
to work out by hand: NAB's credit for a detection at a window's start, middle and end, false
positives far from and just after a window, a missed window, the probation, the threshold
optimisation, the normalisation, and the event-wise metrics. Standard library only.

The scaled sigmoid is s(x) = 2 / (1 + e^(5x)) - 1; the values used below:
  s(-1)   = 2 / (1 + e^-5)   - 1 = 2 / 1.0067379 - 1 = 0.9866143
  s(-0.6) = 2 / (1 + e^-3)   - 1 = 2 / 1.0497871 - 1 = 0.9051483
  s(-0.2) = 2 / (1 + e^-1)   - 1 = 2 / 1.3678794 - 1 = 0.4621172
  s(0.25) = 2 / (1 + e^1.25) - 1 = 2 / 4.4903430 - 1 = -0.5545997
  s(1.5)  = 2 / (1 + e^7.5)  - 1 = 2 / 1809.0424 - 1 = -0.9988944
  s(x)    = -1 for x > 3
"""

import os
import sys
import unittest

SOURCE = os.environ.get("AD_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "train"))
import quality_scoring as qs  # noqa: E402

STD = qs.PROFILES["standard"]          # tp 1, fp 0.11, fn 1
LOW_FP = qs.PROFILES["reward_low_FP_rate"]  # tp 1, fp 0.22, fn 1
LOW_FN = qs.PROFILES["reward_low_FN_rate"]  # tp 1, fp 0.11, fn 2
STEP = 60_000  # one record a minute
N = 40         # probation: floor(0.15 * 40) = 6 records (0..5)
TIMES = [k * STEP for k in range(N)]
# One window over records 20..24 (inclusive): width w = 5, hi - lo = 4.
WINDOW = (20 * STEP, 24 * STEP)


def series(detections, windows=(WINDOW,), n=N, name="a"):
    """A series whose score is 1 at the given records, 0 elsewhere."""
    times = TIMES[:n]
    scores = [0.0] * n
    for i in detections:
        scores[i] = 1.0
    return qs.Series(name, n, qs.window_spans(times, list(windows)), scores=scores,
                     detections=sorted(detections), times=times,
                     window_times=list(windows), step_ms=STEP)


def score(corpus, profile=STD, threshold=1.0):
    return qs.nab_score(corpus, profile, threshold)["score"]


class Rules(unittest.TestCase):
    def test_sigmoid(self):
        self.assertAlmostEqual(qs.sigmoid_credit(-1.0), 0.9866143, places=6)
        self.assertAlmostEqual(qs.sigmoid_credit(0.0), 0.0, places=12)
        self.assertEqual(qs.sigmoid_credit(3.01), -1.0)

    def test_probation(self):
        # min(floor(15 % of n), 750): 40 -> 6; 4032 (most NAB files) -> floor(604.8) = 604;
        # 5000 -> 750; 6000 -> min(900, 750) = 750.
        self.assertEqual(qs.probation(40), 6)
        self.assertEqual(qs.probation(4032), 604)
        self.assertEqual(qs.probation(5000), 750)
        self.assertEqual(qs.probation(6000), 750)

    def test_window_spans(self):
        # Inclusive at both ends; a window with no record in it has no span.
        self.assertEqual(qs.window_spans(TIMES, [WINDOW]), [(20, 24)])
        self.assertEqual(qs.window_spans(TIMES, [(20 * STEP + 1, 24 * STEP - 1)]), [(21, 23)])
        self.assertEqual(qs.window_spans(TIMES, [(100 * STEP, 101 * STEP)]), [None])


class Detections(unittest.TestCase):
    """One window, standard profile: null = -fn * 1 = -1, perfect = tp * 1 = 1, so
    score = 100 * (raw + 1) / 2."""

    def test_at_window_start(self):
        # i = 20: x = -(24 - 20 + 1) / 5 = -1, credit s(-1) / s(-1) * tp = 1: raw 1 -> 100.
        self.assertAlmostEqual(score([series([20])]), 100.0, places=9)

    def test_in_window_middle(self):
        # i = 22: x = -(24 - 22 + 1) / 5 = -0.6, credit 0.9051483 / 0.9866143 = 0.9174287:
        # 100 * (0.9174287 + 1) / 2 = 95.871434.
        self.assertAlmostEqual(score([series([22])]), 95.871434, places=5)

    def test_at_window_end(self):
        # i = 24: x = -1 / 5 = -0.2, credit 0.4621172 / 0.9866143 = 0.4683868:
        # 100 * 1.4683868 / 2 = 73.419342.
        self.assertAlmostEqual(score([series([24])]), 73.419342, places=5)

    def test_only_the_earliest_detection_counts(self):
        # 20, 22 and 24 all in the window: the best (earliest) credit, 1, is the window's.
        self.assertAlmostEqual(score([series([20, 22, 24])]), 100.0, places=9)

    def test_false_positive_far_from_a_window(self):
        # i = 10, before any window: -1 * fp = -0.11; the window is missed: -1.
        # raw -1.11 -> 100 * (-0.11) / 2 = -5.5.
        self.assertAlmostEqual(score([series([10])]), -5.5, places=9)
        # After the window, 3.75 widths on (|39 - 24| / 4 > 3): also -0.11. With the window
        # found at its start: raw 1 - 0.11 = 0.89 -> 94.5.
        self.assertAlmostEqual(score([series([20, 39])]), 94.5, places=9)

    def test_false_positive_just_after_a_window(self):
        # i = 25: |25 - 24| / (24 - 20) = 0.25 past the window: s(0.25) * fp =
        # -0.5545997 * 0.11 = -0.0610060, less than a far one's -0.11.
        # raw 1 - 0.0610060 = 0.9389940 -> 100 * 1.9389940 / 2 = 96.949700.
        self.assertAlmostEqual(score([series([20, 25])]), 96.949700, places=5)
        # Under reward_low_FP_rate (fp 0.22): raw 1 - 0.1220119 -> 93.899402.
        self.assertAlmostEqual(score([series([20, 25])], LOW_FP), 93.899402, places=5)

    def test_missed_window(self):
        # Nothing detected: raw -fn = -1 = null -> 0 in every profile.
        for profile in qs.PROFILES.values():
            self.assertAlmostEqual(score([series([])], profile), 0.0, places=9)
        # reward_low_FN_rate: null = -2, perfect = 1. One of two windows missed, the other
        # found at its start: raw 1 - 2 = -1 -> 100 * (-1 + 4) / (2 - -4) = 50.
        two = series([20], windows=(WINDOW, (30 * STEP, 34 * STEP)))
        self.assertAlmostEqual(score([two], LOW_FN), 50.0, places=9)
        # standard: raw 1 - 1 = 0, null -2, perfect 2 -> 50 as well.
        self.assertAlmostEqual(score([two]), 50.0, places=9)

    def test_probation(self):
        # A detection at i = 3 (< 6) is not scored: raw -1 (the missed window) -> 0, not -5.5.
        self.assertAlmostEqual(score([series([3])]), 0.0, places=9)
        # A window entirely inside the probation (records 1..4) does not count: one window
        # is left, found at its start -> 100 (with it counted as missed it would be 50).
        s = series([20], windows=((1 * STEP, 4 * STEP), WINDOW))
        result = qs.nab_score([s], STD, 1.0)
        self.assertEqual(result["windows"], 1)
        self.assertAlmostEqual(result["score"], 100.0, places=9)


class Optimisation(unittest.TestCase):
    def test_best_threshold_wins(self):
        # Scores: 0.9 at i = 10 (a false positive before the window), 0.8 at i = 20 (the
        # window's start), 0.5 at i = 30 (|30 - 24| / 4 = 1.5 past the window), 0 elsewhere.
        #   threshold 0.9: the false positive alone: raw -0.11 - 1 (missed) = -1.11
        #   threshold 0.8: + the window at its start: -0.11 + 1 = 0.89
        #   threshold 0.5: + s(1.5) * 0.11 = -0.1098784: 0.7801216
        #   threshold 0:   every scored record: the 14 before the window cost -0.11 each
        #                  (-1.54) and the 15 after at least s(0.25) * 0.11 each, so
        #                  raw <= 1 - 1.54 - 15 * 0.0610060 < -1.4
        #   nothing:       -1
        # Best: 0.8, raw 0.89 -> 100 * 1.89 / 2 = 94.5.
        s = series([])
        s.scores[10], s.scores[20], s.scores[30] = 0.9, 0.8, 0.5
        result = qs.nab_score([s], STD)
        self.assertEqual(result["threshold"], 0.8)
        self.assertAlmostEqual(result["raw"], 0.89, places=9)
        self.assertAlmostEqual(result["score"], 94.5, places=9)
        self.assertAlmostEqual(qs.nab_score([s], STD, 0.5)["raw"], 0.7801216, places=6)

    def test_one_threshold_for_the_whole_corpus(self):
        # Series a: 0.6 at its window's start (i = 20), 0.9 at i = 10 (a false positive).
        # Series b: 0.9 at its window's start.
        #   threshold 0.9: b found (1), a's false positive (-0.11), a missed (-1): -0.11
        #   threshold 0.6: both found, the false positive: 2 - 0.11 = 1.89
        #   nothing:       -2; everything: far worse (as above, per series)
        # Best 0.6: null -2, perfect 2: 100 * (1.89 + 2) / 4 = 97.25. Per series, a would
        # have taken 0.6 and b 0.9; one corpus threshold is the rule.
        a, b = series([], name="a"), series([], name="b")
        a.scores[20], a.scores[10], b.scores[20] = 0.6, 0.9, 0.9
        result = qs.nab_score([a, b], STD)
        self.assertEqual(result["threshold"], 0.6)
        self.assertAlmostEqual(result["score"], 97.25, places=9)

    def test_nothing_detected_when_everything_costs(self):
        # Only a false positive scores above 0: detecting nothing (-1 -> 0) beats it
        # (-1.11), and flagging every record is worse still; threshold None, score 0.
        s = series([])
        s.scores[10] = 0.7
        result = qs.nab_score([s], STD)
        self.assertIsNone(result["threshold"])
        self.assertAlmostEqual(result["score"], 0.0, places=9)


class Normalisation(unittest.TestCase):
    def test_null_and_perfect(self):
        # Three series, four windows. The null detector (no detections) scores -fn per
        # window = null -> 0; the perfect one (the first record of each window, nothing
        # else) tp per window = perfect -> 100, in every profile. (The null detector is
        # scored as raised, at threshold 1: the optimiser would also try threshold 0, every
        # record a detection, which on series this short can beat missing every window.)
        w2 = (30 * STEP, 34 * STEP)
        layouts = [((WINDOW,), [20]), ((WINDOW, w2), [20, 30]), (((8 * STEP, 9 * STEP),), [8])]
        null = [series([], windows=w, name="s%d" % k) for k, (w, _) in enumerate(layouts)]
        perfect = [series(d, windows=w, name="s%d" % k) for k, (w, d) in enumerate(layouts)]
        for name, profile in qs.PROFILES.items():
            self.assertAlmostEqual(qs.nab_score(null, profile, 1.0)["score"], 0.0, places=9,
                                   msg=name)
            self.assertAlmostEqual(qs.nab_score(perfect, profile)["score"], 100.0, places=9,
                                   msg=name)

    def test_no_windows(self):
        # Only quiet series: nothing to normalise by.
        self.assertIsNone(qs.nab_score([series([5, 10], windows=())], STD)["score"])


class EventWise(unittest.TestCase):
    def test_metrics(self):
        # a: one window (records 20..24, starts at minute 20); detections 3 (probation:
        #    ignored), 22, 23 (inside) and 30 (outside): found, 2 inside, 1 false alert,
        #    delay 22 - 20 = 2 minutes = 2 steps (the first detection counts).
        # b: windows 1..3 (inside the probation: not counted), 10..12 and 30..33 (starts at
        #    minute 30); detections 31 (inside) and 35 (outside): 1 of 2 found, delay 1 step,
        #    1 false alert.
        # c: no incident; detections 8, 9: 2 false alerts. Scored span: minute 6 (the first
        #    scored record) to minute 39, plus one step: 34 minutes = 34 / 1440 days.
        # Totals: windows 1 + 2 = 3, found 2, detections 3 + 2 + 2 = 7, inside 2 + 1 = 3.
        #   precision 3 / 7, recall 2 / 3, F1 = 2 * (3/7) * (2/3) / (3/7 + 2/3) = 12 / 23,
        #   median delay of [2, 1] steps = 1.5 steps = 90 s, false alerts 1 + 1 + 2 = 4,
        #   false alerts a day on quiet series 2 / (34 / 1440) = 84.705882.
        a = series([3, 22, 23, 30], name="a")
        b = series([31, 35], name="b", windows=((1 * STEP, 3 * STEP), (10 * STEP, 12 * STEP),
                                                (30 * STEP, 33 * STEP)))
        c = series([8, 9], name="c", windows=())
        m = qs.event_metrics([a, b, c])
        t = m["totals"]
        self.assertEqual((t["windows"], t["found"], t["detections"], t["in_window"],
                          t["false_alerts"]), (3, 2, 7, 3, 4))
        self.assertAlmostEqual(t["precision"], 3 / 7)
        self.assertAlmostEqual(t["recall"], 2 / 3)
        self.assertAlmostEqual(t["f1"], 12 / 23)
        self.assertEqual(t["median_delay_ms"], 90_000)
        self.assertEqual(t["median_delay_steps"], 1.5)
        self.assertEqual(t["quiet_false_alerts"], 2)
        self.assertAlmostEqual(t["false_alerts_per_day_quiet"], 84.705882, places=5)
        rows = {r["series"]: r for r in m["series"]}
        self.assertEqual((rows["a"]["found"], rows["a"]["false_alerts"], rows["a"]["delays_ms"]),
                         (1, 1, [120_000]))
        self.assertEqual((rows["b"]["windows"], rows["b"]["found"], rows["b"]["delays_steps"]),
                         (2, 1, [1.0]))
        self.assertEqual(rows["c"]["false_alerts"], 2)

    def test_an_incident_counts_once(self):
        # Ten detections inside one window: one incident found (no point-adjust), precision
        # 10 / 10, recall 1 / 1, F1 1.
        t = qs.event_metrics([series(list(range(20, 25)) * 2)])["totals"]
        self.assertEqual((t["found"], t["windows"]), (1, 1))
        self.assertEqual((t["precision"], t["recall"], t["f1"]), (1.0, 1.0, 1.0))

    def test_nothing_detected(self):
        # No detections: precision undefined, recall 0, F1 0, no delay.
        t = qs.event_metrics([series([])])["totals"]
        self.assertIsNone(t["precision"])
        self.assertEqual((t["recall"], t["f1"]), (0.0, 0.0))
        self.assertIsNone(t["median_delay_ms"])


if __name__ == "__main__":
    unittest.main()

#!/usr/bin/python3
"""train/anomalyd_eval.py, the detection-quality evaluation (docs/quality.md), end to end on
two synthetic series written here: a daily sine with noise and a clear incident (a level
shift of about 10 standard deviations of the series, lasting 4 hours, inside its labelled
window), and a quiet one of the same kind without incident. Each is trained on its first
15 % by the reference trainer and replayed by the built anomalyd. The incident must be found
and the quiet series must stay silent; the table, the --json document and the NAB-format
result files must hold what docs/quality.md says. The same series in NAB's layout must give
the same figures. Input errors exit 2 and name the file and line. No timing assertions.

Skips (77) without torch, numpy or yaml.
"""

import csv
import datetime
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import yaml  # noqa: F401
except ImportError:
    print("skipped: torch, numpy or yaml is not installed")
    sys.exit(77)

BUILD = os.environ.get("AD_BUILD_DIR", "build")
SOURCE = os.environ.get("AD_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ANOMALYD = os.path.join(BUILD, "anomalyd")
TOOL = os.path.join(SOURCE, "train", "anomalyd_eval.py")

STEP_MS = 300_000                    # a record every 5 minutes
N = 4000                             # about 14 days; training: the first 600 (2 days)
T0_MS = 1_700_006_400_000            # 2023-11-15T00:00:00Z
PERIOD = 288                         # a day of records
SHIFT = (2600, 2648)                 # records with the level shift: 4 hours
SHIFT_BY = 70.0                      # the series' spread is about 7 (sine 10, noise 1)
WINDOW = (SHIFT[0] - 12, SHIFT[1] + 12)   # the labelled window: an hour either side
COLUMNS = ["detector", "NAB standard", "reward low FP", "reward low FN", "windows found",
           "false alerts", "precision", "recall", "F1", "median time to detect",
           "false alerts/day (quiet series)"]


def values(seed, shift):
    rng = random.Random(seed)
    out = []
    for k in range(N):
        v = 50.0 + 10.0 * math.sin(2 * math.pi * k / PERIOD) + rng.gauss(0.0, 1.0)
        if shift and SHIFT[0] <= k < SHIFT[1]:
            v += SHIFT_BY
        out.append(v)
    return out


def iso(ms, nab=False):
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S") if nab else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_series(path, vals, unix_ms=False, nab=False):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "value"])
        for k, v in enumerate(vals):
            t = T0_MS + k * STEP_MS
            w.writerow([str(t) if unix_ms else iso(t, nab), "%.4f" % v])


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, "--anomalyd", ANOMALYD, *args],
                          capture_output=True, text=True)


def table_rows(stdout):
    """The table's rows as {first cell: cells}; the header must be COLUMNS."""
    lines = [l for l in stdout.splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS, header
    return {cells[0]: cells for cells in
            ([c.strip() for c in l.strip("|").split("|")] for l in lines[1:])}


class QualityEval(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="anomalyd-quality-")
        cls.shift = values(1, True)
        cls.quiet = values(2, False)
        d = cls.dir
        write_series(os.path.join(d, "shift.csv"), cls.shift)
        write_series(os.path.join(d, "quiet.csv"), cls.quiet, unix_ms=True)
        with open(os.path.join(d, "incidents.csv"), "w") as f:
            f.write("series,start,end\nshift,%s,%s\n" % (
                iso(T0_MS + WINDOW[0] * STEP_MS), iso(T0_MS + WINDOW[1] * STEP_MS)))
        cls.has_scores = b"--scores" in subprocess.run(
            [ANOMALYD, "replay", "--help"], capture_output=True).stdout
        cls.json_path = os.path.join(d, "out.json")
        cls.results = os.path.join(d, "results")
        cls.proc = run_tool("--series", os.path.join(d, "shift.csv"),
                            os.path.join(d, "quiet.csv"),
                            "--incidents", os.path.join(d, "incidents.csv"),
                            "--per-series", "--json", cls.json_path,
                            "--results-dir", cls.results, "--keep", os.path.join(d, "work"),
                            "-j", "2")
        if cls.proc.returncode != 0:
            raise AssertionError("anomalyd_eval.py exited %d:\n%s\n%s" % (
                cls.proc.returncode, cls.proc.stdout, cls.proc.stderr))
        with open(cls.json_path) as f:
            cls.doc = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def alerts_row(self):
        return next(r for r in self.doc["rows"] if r["name"] == "anomalyd as shipped")

    def test_incident_found(self):
        row = self.alerts_row()
        per = {s["series"]: s for s in row["events"]["series"]}
        shift = per["shift.csv"]
        self.assertEqual((shift["windows"], shift["found"]), (1, 1),
                         "the level shift was not detected: %s\n%s" % (shift, self.proc.stderr))
        self.assertEqual(len(shift["delays_ms"]), 1)
        # The first detection lies inside the window, so its delay is within it.
        self.assertGreaterEqual(shift["delays_ms"][0], 0)
        self.assertLessEqual(shift["delays_ms"][0], (WINDOW[1] - WINDOW[0]) * STEP_MS)
        series = {s["name"]: s for s in self.doc["series"]}
        stamps = series["shift.csv"]["detections"]["anomalyd as shipped"]
        window = (iso(T0_MS + WINDOW[0] * STEP_MS), iso(T0_MS + WINDOW[1] * STEP_MS))
        self.assertTrue(any(window[0] <= s <= window[1] for s in stamps), stamps)

    def test_quiet_series_silent(self):
        row = self.alerts_row()
        per = {s["series"]: s for s in row["events"]["series"]}
        self.assertEqual(per["quiet.csv"]["windows"], 0)
        self.assertEqual(per["quiet.csv"]["false_alerts"], 0,
                         "the quiet series raised alerts: %s" % per["quiet.csv"])
        t = row["events"]["totals"]
        self.assertEqual(t["quiet_false_alerts"], 0)
        self.assertEqual(t["false_alerts_per_day_quiet"], 0.0)
        # About 11.8 scored days: records 600..3999 plus a step.
        self.assertAlmostEqual(t["quiet_days"], (N - 600) * STEP_MS / 86_400_000, places=6)

    def test_table(self):
        rows = table_rows(self.proc.stdout)
        row = rows["anomalyd as shipped"]
        self.assertEqual(row[4], "%d/1" % self.alerts_row()["events"]["totals"]["found"])
        for name in ("ARTime", "Numenta HTM", "CAD OSE", "Random Cut Forest", "Twitter ADVec",
                     "Etsy Skyline"):
            label = "%s (published, full 58-series corpus)" % name
            self.assertIn(label, rows)
        self.assertEqual(rows["ARTime (published, full 58-series corpus)"][1:4],
                         ["74.9", "65.1", "80.4"])
        self.assertIn("### anomalyd as shipped", self.proc.stdout)  # --per-series
        self.assertIn("| shift.csv | 1 |", self.proc.stdout)
        if self.has_scores:
            self.assertIn("anomalyd as shipped, likelihood as a continuous score", rows)

    def test_json(self):
        d = self.doc
        self.assertEqual(d["corpus"]["series"], 2)
        self.assertEqual(d["corpus"]["windows"], 1)
        self.assertEqual(d["settings"]["window_steps"], 16)
        self.assertEqual(d["settings"]["scores_supported"], self.has_scores)
        row = self.alerts_row()
        for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
            self.assertIn("score", row["nab"][profile])
            self.assertIn("threshold", row["nab"][profile])
            self.assertIn(profile, row["nab_as_raised"])
        for key in ("windows", "found", "detections", "in_window", "false_alerts", "precision",
                    "recall", "f1", "median_delay_ms", "median_delay_steps",
                    "false_alerts_per_day_quiet"):
            self.assertIn(key, row["events"]["totals"])
        self.assertEqual(row["events"]["totals"]["recall"], 1.0)
        series = {s["name"]: s for s in d["series"]}
        self.assertEqual(series["shift.csv"]["step_ms"], STEP_MS)
        self.assertEqual(series["shift.csv"]["train_records"], 600)
        self.assertEqual(series["shift.csv"]["probation"], 600)
        self.assertIsNone(series["quiet.csv"]["skipped"])
        det = series["shift.csv"]["detector"]
        self.assertEqual((det["step"], det["window"], det["allowed_lateness"]),
                         ("5m", "1h20m", "0s"))
        self.assertEqual([r["name"] for r in d["published"]["rows"]][:2],
                         ["ARTime", "Numenta HTM"])
        if self.has_scores:
            names = [r["name"] for r in d["rows"]]
            self.assertIn("anomalyd as shipped, likelihood as a continuous score", names)

    def test_results_dir(self):
        path = os.path.join(self.results, "anomalyd-as-shipped", "shift.csv")
        with open(path) as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0], ["timestamp", "anomaly_score"])
        self.assertEqual(len(rows), N + 1)
        self.assertEqual(rows[1][0], iso(T0_MS))
        ones = [k for k, r in enumerate(rows[1:]) if float(r[1]) == 1.0]
        self.assertTrue(any(WINDOW[0] <= k <= WINDOW[1] for k in ones), ones)
        with open(os.path.join(self.results, "anomalyd-as-shipped", "quiet.csv")) as f:
            self.assertTrue(all(float(r[1]) == 0.0 for r in list(csv.reader(f))[1:]))

    def test_nab_layout_gives_the_same(self):
        # The same two series in NAB's layout (its timestamp format, windows with
        # .000000), with --score-results on the files just written: the same NAB scores.
        root = os.path.join(self.dir, "nab")
        os.makedirs(os.path.join(root, "data", "synthetic"))
        os.makedirs(os.path.join(root, "labels"))
        write_series(os.path.join(root, "data", "synthetic", "shift.csv"), self.shift, nab=True)
        write_series(os.path.join(root, "data", "synthetic", "quiet.csv"), self.quiet, nab=True)
        start = iso(T0_MS + WINDOW[0] * STEP_MS, nab=True) + ".000000"
        end = iso(T0_MS + WINDOW[1] * STEP_MS, nab=True) + ".000000"
        with open(os.path.join(root, "labels", "combined_windows.json"), "w") as f:
            json.dump({"synthetic/shift.csv": [[start, end]], "synthetic/quiet.csv": []}, f)
        results = os.path.join(self.dir, "nab-results")
        for name in ("shift.csv", "quiet.csv"):
            os.makedirs(os.path.join(results, "synthetic"), exist_ok=True)
            shutil.copy(os.path.join(self.results, "anomalyd-as-shipped", name),
                        os.path.join(results, "synthetic", name))
        out = os.path.join(self.dir, "scored.json")
        proc = run_tool("--nab", root, "--score-results", results, "--json", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(out) as f:
            scored = json.load(f)["rows"][0]
        mine = self.alerts_row()
        for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
            self.assertAlmostEqual(scored["nab"][profile]["score"],
                                   mine["nab"][profile]["score"], places=9)
        self.assertEqual(scored["events"]["totals"]["found"], mine["events"]["totals"]["found"])

    def test_input_errors(self):
        # A missing labels file, a value that is not a number, a time that is not one, an
        # incident for a series that is not given: status 2, naming the file (and line).
        empty = os.path.join(self.dir, "empty-nab")
        os.makedirs(empty, exist_ok=True)
        proc = run_tool("--nab", empty)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("combined_windows.json", proc.stderr)
        bad = os.path.join(self.dir, "bad.csv")
        with open(bad, "w") as f:
            f.write("timestamp,value\n2023-11-15T00:00:00Z,1\n2023-11-15T00:05:00Z,abc\n")
        proc = run_tool("--series", bad)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("%s:3:" % bad, proc.stderr)
        with open(bad, "w") as f:
            f.write("timestamp,value\n2023-11-15T00:00:00Z,1\nyesterday,2\n")
        proc = run_tool("--series", bad)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("%s:3:" % bad, proc.stderr)
        incidents = os.path.join(self.dir, "bad-incidents.csv")
        with open(incidents, "w") as f:
            f.write("series,start,end\nnope,2023-11-15T00:00:00Z,2023-11-15T01:00:00Z\n")
        proc = run_tool("--series", os.path.join(self.dir, "quiet.csv"), "--incidents",
                        incidents)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("%s:2:" % incidents, proc.stderr)


if __name__ == "__main__":
    unittest.main()

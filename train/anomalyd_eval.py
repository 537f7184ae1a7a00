#!/usr/bin/python3
"""anomalyd's detection-quality evaluation (docs/quality.md).

Given labelled series (NAB's layout, or CSV files with an incidents file), for each series:
train a model on its first stretch (NAB's probation: no label is used), replay the whole
series through `anomalyd replay` with the shipped defaults (and each variant of VARIANTS),
turn the firing alerts into detections, and score them by NAB's published rules and by
event-wise metrics (train/quality_scoring.py). Prints one table row per variant.

Exit status: 0 a table was printed; 1 a training or a replay failed; 2 usage or input error
(a missing labels file, a series that does not parse, ...), with the file and line at fault.
"""

import argparse
import bisect
import concurrent.futures
import copy
import csv
import datetime
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_scoring as qs  # noqa: E402

PROG = "anomalyd_eval"
HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "anomalyd_train.py")

# Steps per window (T) of the generated detector; --window-steps changes it.
DEFAULT_WINDOW_STEPS = 16
# The training stretch: the first min(15 %, 750) records, as NAB's probation.
DEFAULT_TRAIN_SHARE = 0.15
DEFAULT_TRAIN_MAX = 750
# A series whose training stretch holds fewer buckets than this many windows' worth is
# skipped: a model calibrated on a handful of held-out windows says nothing.
MIN_TRAIN_WINDOWS = 4
# What the generated config calls things. The replay CSV is time_ms,series,metric.value.
SOURCE = "metric"
FEATURE = SOURCE + ".value"
KEY = "series"
DETECTOR = "quality"
MODEL_VERSION = "v1"
# anomalyd's limits on the detector's durations (docs/config.md).
MAX_STEP_S = 86_400
MAX_ENTITY_IDLE_S = 30 * 86_400          # 4w2d
MIN_ENTITY_IDLE_S = 3_600                # the default, 1h
SOURCE_IDLE_TIMEOUT = "1d"               # the largest allowed; a replay does not use it

# The rows of the report: a name and overrides deep-merged into the detector's mapping of the
# config (a dict of the detector's keys: {"threshold": {"likelihood": 0.99}}, ...). Training
# is done once per series and serves every variant, so a variant may not change the step, the
# window, the keys or the features. Add rows here ("the LSTM alone", ...).
VARIANTS = [
    ("anomalyd as shipped", {}),
    # Each part alone (docs/scoring.md): the LSTM's stream, and the seasonal baseline's, which
    # needs no model.
    ("LSTM stream alone", {"streams": ["lstm"]}),
    ("seasonal baseline alone", {"streams": ["seasonal"]}),
]

# NAB's public scoreboard (standard, reward low FP, reward low FN), for reference. These are
# on NAB's full corpus of 58 series, not on the series evaluated here.
PUBLISHED = [
    ("ARTime", 74.9, 65.1, 80.4),
    ("Numenta HTM", 70.5, 62.6, 75.2),
    ("CAD OSE", 69.9, 67.0, 73.2),
    ("Random Cut Forest", 51.7, 38.4, 59.7),
    ("Twitter ADVec", 47.1, 33.6, 53.5),
    ("Etsy Skyline", 35.7, 27.1, 44.5),
    ("null (no detections)", 0.0, 0.0, 0.0),
]
PUBLISHED_NOTE = "published, full 58-series corpus"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


class InputError(Exception):
    """Usage or input error (exit status 2)."""


class ToolFailure(Exception):
    """The trainer or anomalyd failed (exit status 1); the message holds its stderr tail."""


# ---- times and durations ----

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_UNIX_MS = re.compile(r"^-?\d+$")


def parse_time(text):
    """A time in ms: an integer (Unix ms) or ISO 8601 (`2014-04-01 00:05:00`,
    `2014-04-01T00:05:00.000000`, `...Z`, `...+02:00`; without an offset, UTC). Raises
    ValueError."""
    t = text.strip()
    if _UNIX_MS.match(t):
        return int(t)
    dt = datetime.datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return (dt - _EPOCH) // datetime.timedelta(milliseconds=1)


def format_ms(ms):
    """RFC 3339 with ms, as the alerts write times."""
    dt = _EPOCH + datetime.timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


_DURATION_PART = re.compile(r"(\d+)(ms|w|d|h|m|s)")
_UNIT_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000,
            "ms": 1}


def parse_duration(value, where):
    """A config duration (`5m`, `1h30m`, `300s`, `0`) in ms."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str) or not value:
        raise InputError("%s: %r is not a duration (like 5m or 300s)" % (where, value))
    if value == "0":
        return 0
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(value):
        raise InputError("%s: %r is not a duration (like 5m or 300s)" % (where, value))
    return total


def format_duration(ms):
    """ms as a config duration, largest units first (`1h20m`, `5m`, `1d`)."""
    if ms == 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, _UNIT_MS[unit])
        if n:
            out.append("%d%s" % (n, unit))
    return "".join(out)


def human_ms(ms):
    """A delay for people: `2h05m`, `35m`, `40s`, `-1h10m`."""
    sign = "-" if ms < 0 else ""
    s = round(abs(ms) / 1000)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return "%s%dd%02dh" % (sign, d, h)
    if h:
        return "%s%dh%02dm" % (sign, h, m)
    if m:
        return "%s%dm%s" % (sign, m, "%02ds" % s if s else "")
    return "%s%ds" % (sign, s)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# ---- inputs ----

class Series:
    """One labelled series: name (NAB: `category/file.csv`; else the file's base name), the
    file, its records (times in ms, the timestamps as written, values) and incident
    windows (start_ms, end_ms)."""

    def __init__(self, name, path, stamps, times, values, windows):
        self.name, self.path = name, path
        self.stamps, self.times, self.values = stamps, times, values
        self.windows = windows


def read_series(path, name):
    """A two-column CSV (time, value), with or without a header row."""
    stamps, times, values = [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                where = "%s:%d" % (path, reader.line_num)
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise InputError("%s: %d fields; a record is time,value" % (where, len(row)))
                try:
                    t = parse_time(row[0])
                except ValueError:
                    if not times and reader.line_num == 1:
                        continue  # the header
                    raise InputError("%s: %r is not a time (ISO 8601 or Unix ms)"
                                     % (where, row[0])) from None
                try:
                    v = float(row[1])
                except ValueError:
                    v = math.nan
                if not math.isfinite(v):
                    raise InputError("%s: %r is not a finite number" % (where, row[1]))
                if times and t < times[-1]:
                    raise InputError("%s: %s is before the record above it: records must be "
                                     "in time order" % (where, row[0].strip()))
                stamps.append(row[0].strip())
                times.append(t)
                values.append(v)
    except OSError as e:
        raise InputError("%s: %s" % (path, e.strerror)) from None
    except UnicodeDecodeError as e:
        raise InputError("%s: not valid UTF-8: %s" % (path, e)) from None
    except csv.Error as e:
        raise InputError("%s: %s" % (path, e)) from None
    return Series(name, path, stamps, times, values, [])


def _window(pair, where):
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise InputError("%s: a window is [start, end]" % where)
    try:
        start, end = parse_time(str(pair[0])), parse_time(str(pair[1]))
    except ValueError:
        raise InputError("%s: %r is not a pair of times" % (where, pair)) from None
    if end < start:
        raise InputError("%s: the window ends before it starts" % where)
    return start, end


def check_windows(series, where):
    """Windows sorted and not overlapping: each record belongs to at most one incident."""
    series.windows.sort()
    for (a0, a1), (b0, b1) in zip(series.windows, series.windows[1:]):
        if b0 <= a1:
            raise InputError("%s: the windows %s..%s and %s..%s of %s overlap: merge them"
                             % (where, format_ms(a0), format_ms(a1), format_ms(b0),
                                format_ms(b1), series.name))


def load_nab(root):
    """NAB's layout: ROOT/data/<category>/<file>.csv and ROOT/labels/combined_windows.json.
    The series are the labels file's entries; a data file it does not name is left out."""
    labels_path = os.path.join(root, "labels", "combined_windows.json")
    try:
        with open(labels_path, encoding="utf-8") as f:
            labels = json.load(f)
    except OSError as e:
        raise InputError("%s: %s (NAB's layout: DIR/labels/combined_windows.json)"
                         % (labels_path, e.strerror)) from None
    except ValueError as e:
        raise InputError("%s: not valid JSON: %s" % (labels_path, e)) from None
    if not isinstance(labels, dict) or not labels:
        raise InputError("%s: no series (an object of \"category/file.csv\": [[start, end], "
                         "...])" % labels_path)
    out = []
    for rel in sorted(labels):
        where = "%s: %s" % (labels_path, rel)
        if not isinstance(labels[rel], list):
            raise InputError("%s: not a list of windows" % where)
        path = os.path.join(root, "data", rel)
        if not os.path.isfile(path):
            raise InputError("%s: no data file %s" % (where, path))
        series = read_series(path, rel)
        series.windows = [_window(w, where) for w in labels[rel]]
        check_windows(series, where)
        out.append(series)
    named = {os.path.normpath(os.path.join(root, "data", r)) for r in labels}
    for dirpath, _, files in os.walk(os.path.join(root, "data")):
        for name in files:
            p = os.path.normpath(os.path.join(dirpath, name))
            if name.endswith(".csv") and p not in named:
                log("note: %s has no entry in the labels file; left out" % p)
    return out


def load_series(paths, incidents_path):
    """--series files and the --incidents CSV (series,start,end)."""
    out, by_name = [], {}
    for path in paths:
        name = os.path.basename(path)
        stem = name[:-4] if name.lower().endswith(".csv") else name
        if stem in by_name:
            raise InputError("%s: a second series named %s (the name is the file's base name)"
                             % (path, stem))
        series = read_series(path, name)
        out.append(series)
        by_name[stem] = by_name[name] = series
    if incidents_path:
        try:
            with open(incidents_path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = None
                for row in reader:
                    where = "%s:%d" % (incidents_path, reader.line_num)
                    if not row or not any(c.strip() for c in row):
                        continue
                    cells = [c.strip() for c in row]
                    if header is None:
                        header = cells
                        if header != ["series", "start", "end"]:
                            raise InputError("%s: the header must be series,start,end" % where)
                        continue
                    if len(cells) != 3:
                        raise InputError("%s: %d fields; an incident is series,start,end"
                                         % (where, len(cells)))
                    series = by_name.get(cells[0])
                    if series is None:
                        raise InputError("%s: no series %r among --series" % (where, cells[0]))
                    series.windows.append(_window(cells[1:], where))
                if header is None:
                    raise InputError("%s: empty (a header series,start,end is needed)"
                                     % incidents_path)
        except OSError as e:
            raise InputError("%s: %s" % (incidents_path, e.strerror)) from None
        except csv.Error as e:
            raise InputError("%s: %s" % (incidents_path, e)) from None
    for series in out:
        check_windows(series, incidents_path or series.path)
    return out


def load_template(path):
    """--config: a YAML file whose `detectors:` holds one detector (or the detector's
    mapping itself). Only that detector is used."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise InputError("%s: %s" % (path, e.strerror)) from None
    except yaml.YAMLError as e:
        raise InputError("%s: not valid YAML: %s" % (path, e)) from None
    if isinstance(doc, dict) and "detectors" in doc:
        dets = doc["detectors"]
        if not isinstance(dets, list) or len(dets) != 1 or not isinstance(dets[0], dict):
            raise InputError("%s: detectors must hold exactly one detector" % path)
        others = sorted(k for k in doc if k != "detectors")
        if others:
            log("note: %s: only the detector is used; %s ignored" % (path, ", ".join(others)))
        return dets[0]
    if isinstance(doc, dict):
        return doc
    raise InputError("%s: neither a config with detectors: nor a detector mapping" % path)


# ---- the config ----

def deep_merge(base, overrides):
    """base with overrides merged in: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def detector_mapping(step_ms, window_steps, span_ms, template):
    """The detector for one series: the template's keys (when --config gave one) over the
    inferred ones; name, keys, features and model are always the tool's, since the replay
    CSV and the model are laid out for them."""
    entity_idle_s = min(MAX_ENTITY_IDLE_S,
                        max(MIN_ENTITY_IDLE_S, math.ceil((span_ms + step_ms) / 1000)))
    det = {
        "name": DETECTOR,
        "keys": [KEY],
        "features": [FEATURE],
        "step": format_duration(step_ms),
        "window": format_duration(window_steps * step_ms),
        "allowed_lateness": "0s",
        "source_idle_timeout": SOURCE_IDLE_TIMEOUT,
        "entity_idle_timeout": format_duration(entity_idle_s * 1000),
    }
    det = deep_merge(det, template or {})
    det.update({"name": DETECTOR, "keys": [KEY], "features": [FEATURE]})
    det.pop("model", None)
    det.pop("export_path", None)
    return det


def replay_config(detector, store):
    """The replay's config: the detector and the model store, everything else the daemon's
    defaults. No source: a replay reads the features of sources the config does not define
    from its CSV input (docs/replay.md)."""
    return {"detectors": [detector], "model_store": {"path": store}}


def write_yaml(path, doc):
    import yaml
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=False)


# ---- one series ----

class Plan:
    """What one series needs: its step, buckets, the training stretch and the detector."""

    def __init__(self, series, args, template):
        self.series = series
        n = len(series.times)
        self.skip = None
        self.step_ms = None
        self.window_steps = args.window_steps
        self.n_train = min(math.floor(args.train_share * n), args.train_max)
        if n < 2:
            self.skip = "%d record(s): no step can be inferred" % n
            return
        intervals = [b - a for a, b in zip(series.times, series.times[1:])]
        step_s = max(1, round(statistics.median(intervals) / 1000))
        self.inferred_step_ms = step_s * 1000
        self.step_ms = self.inferred_step_ms
        if template and "step" in template:
            self.step_ms = parse_duration(template["step"], "--config: step")
        if template and "window" in template:
            window_ms = parse_duration(template["window"], "--config: window")
            if self.step_ms <= 0 or window_ms % self.step_ms:
                raise InputError("--config: the window (%s) is not a whole number of steps (%s)"
                                 % (template["window"], format_duration(self.step_ms)))
            self.window_steps = window_ms // self.step_ms
        if self.step_ms > MAX_STEP_S * 1000:
            self.skip = "step %s is over 1d, the longest anomalyd supports" % \
                format_duration(self.step_ms)
            return
        step = self.step_ms
        self.buckets = [t // step for t in series.times]
        # The record each bucket stands for: the last of the bucket (the replay aggregates a
        # bucket's records as a gauge: the later wins).
        self.last_of_bucket = {}
        for i, b in enumerate(self.buckets):
            self.last_of_bucket[b] = i
        train_buckets = len({b for b in self.buckets[:self.n_train]})
        needed = MIN_TRAIN_WINDOWS * self.window_steps
        if train_buckets < needed:
            self.skip = ("the training stretch (%d records, %d buckets of %s) is shorter than "
                         "%d windows of %d steps" % (self.n_train, train_buckets,
                                                     format_duration(step), MIN_TRAIN_WINDOWS,
                                                     self.window_steps))
            return
        span_ms = series.times[-1] - series.times[0]
        self.detector = detector_mapping(step, self.window_steps, span_ms, template)

    def record_of_window_end(self, end_ms):
        """The record a window ending at end_ms stands for: the last record of the bucket
        [end - step, end); failing that (no record in it), the last record before end."""
        b = (end_ms - self.step_ms) // self.step_ms
        i = self.last_of_bucket.get(b)
        if i is None:
            i = bisect.bisect_left(self.series.times, end_ms) - 1
        return i if i >= 0 else None


def _run(cmd, what, log_path, env=None, stdout=None):
    with open(log_path, "wb") as err:
        proc = subprocess.run(cmd, stdout=stdout if stdout is not None else subprocess.DEVNULL,
                              stderr=err, env=env)
    if proc.returncode != 0:
        with open(log_path, "rb") as f:
            tail = f.read().decode("utf-8", "replace").splitlines()[-20:]
        raise ToolFailure("%s failed with status %d:\n  %s\n%s" % (
            what, proc.returncode, " ".join(cmd), "\n".join("  | " + l for l in tail)))


def write_bucket_csv(path, plan, records):
    """Rows of anomalyd's replay CSV (and the trainer's): time_ms (the bucket's start),
    series, metric.value."""
    s = plan.series
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["time_ms", KEY, FEATURE])
        for i in records:
            w.writerow([plan.buckets[i] * plan.step_ms, s.name, repr(s.values[i])])


def train(plan, work, args):
    """Trains on the first n_train records: the last record of each bucket, what the replay
    keeps of a bucket (and the trainer's --aggregate last; older trainers refused two rows of
    one bucket)."""
    train_csv = os.path.join(work, "train.csv")
    last = {}
    for i in range(plan.n_train):
        last[plan.buckets[i]] = i
    write_bucket_csv(train_csv, plan, sorted(last.values()))
    store = os.path.join(work, "store")
    if os.path.isdir(store):
        shutil.rmtree(store)
    cmd = [sys.executable, TRAINER, "--csv", train_csv, "--window", str(plan.window_steps),
           "--step-ms", str(plan.step_ms), "--store", store, "--model", DETECTOR,
           "--version", MODEL_VERSION, "--threads", "1", "--mode", args.model_mode,
           "--seed", str(args.seed)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    _run(cmd, "training %s" % plan.series.name, os.path.join(work, "train.log"), env=env)
    return store


def replay(plan, work, store, name, overrides, args):
    """One variant's replay: its config, the alerts, and (when the binary can) the scores."""
    vdir = os.path.join(work, slug(name))
    os.makedirs(vdir, exist_ok=True)
    cfg = os.path.join(vdir, "anomalyd.yaml")
    write_yaml(cfg, replay_config(deep_merge(plan.detector, overrides),
                                  os.path.abspath(store)))
    alerts_path = os.path.join(vdir, "alerts.jsonl")
    cmd = [args.anomalyd, "replay", "-c", cfg, "--input", os.path.join(work, "all.csv"),
           "--log-level", "warn"]
    scores_path = None
    if args.scores_supported:
        scores_path = os.path.join(vdir, "scores.jsonl")
        cmd += ["--scores", scores_path]
    with open(alerts_path, "wb") as out:
        _run(cmd, "the replay of %s (%s)" % (plan.series.name, name),
             os.path.join(vdir, "replay.log"), stdout=out)
    detections = set()
    with open(alerts_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                alert = json.loads(line)
                if alert.get("state") != "firing":
                    continue
                if args.ignore_repeats and alert.get("reason") == "repeat":
                    continue
                end_ms = parse_time(alert["window_end"])
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ToolFailure("%s:%d: not an alert document (%s)" % (alerts_path, lineno, e))
            i = plan.record_of_window_end(end_ms)
            if i is not None:
                detections.add(i)
    likelihoods = None
    if scores_path is not None:
        likelihoods = [0.0] * len(plan.series.times)
        with open(scores_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    end_ms = int(doc["window_end_ms"])
                    like = doc.get("likelihood")
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise ToolFailure("%s:%d: not a score document (%s)"
                                      % (scores_path, lineno, e))
                i = plan.record_of_window_end(end_ms)
                if i is not None and isinstance(like, (int, float)) and math.isfinite(like):
                    likelihoods[i] = min(1.0, max(0.0, float(like)))
    return sorted(detections), likelihoods


def evaluate_series(plan, args, workroot, variants):
    """Trains once and replays each variant. Returns the series' result dict."""
    started = time.monotonic()
    series = plan.series
    result = {"series": series, "plan": plan, "variants": {}}
    if plan.skip:
        log("%s: skipped: %s" % (series.name, plan.skip))
        return result
    work = os.path.join(workroot, slug(series.name))
    os.makedirs(work, exist_ok=True)
    write_bucket_csv(os.path.join(work, "all.csv"), plan, range(len(series.times)))
    store = train(plan, work, args)
    for name, overrides in variants:
        result["variants"][name] = replay(plan, work, store, name, overrides, args)
    log("%s: done in %.1f s (step %s, %d records, trained on %d)" % (
        series.name, time.monotonic() - started, format_duration(plan.step_ms),
        len(series.times), plan.n_train))
    return result


# ---- scoring and the report ----

def scorer_series(series, first, scores=None, detections=None, step_ms=None):
    spans = qs.window_spans(series.times, series.windows)
    return qs.Series(series.name, len(series.times), spans, scores=scores,
                     detections=detections, times=series.times,
                     window_times=series.windows, step_ms=step_ms, first=first,
                     quiet=not series.windows)


def _first_scored(series, args):
    return qs.probation(len(series.times))


def score_row(name, kind, per_series, args, variant=None, row_slug=None):
    """One row: per_series is [(series, step_ms, scores, detections or None, skipped)]. For
    alert rows the detections are given; for continuous scores they are the records at or
    over the threshold the standard profile chose."""
    corpus = [scorer_series(s, _first_scored(s, args), scores=sc, step_ms=step)
              for s, step, sc, _, _ in per_series]
    nab = qs.nab_scores(corpus)
    row = {"name": name, "slug": row_slug or slug(name), "kind": kind, "variant": variant,
           "nab": nab}
    if kind == "alerts":
        row["nab_as_raised"] = qs.nab_scores(corpus, threshold=1.0)
        dets = [d for _, _, _, d, _ in per_series]
    else:
        thr = nab["standard"]["threshold"]
        row["event_threshold"] = thr
        dets = [[i for i, v in enumerate(sc) if thr is not None and v >= thr]
                for _, _, sc, _, _ in per_series]
    for series_obj, d in zip(corpus, dets):
        series_obj.detections = d
    row["events"] = qs.event_metrics(corpus)
    row["skipped"] = [s.name for s, _, _, _, skipped in per_series if skipped]
    return row


def build_rows(results, variants, args):
    rows = []
    for name, _ in variants:
        alerts, likes, have_likes = [], [], args.scores_supported
        for r in results:
            s, plan = r["series"], r["plan"]
            n = len(s.times)
            if plan.skip:
                alerts.append((s, plan.step_ms, [0.0] * n, [], True))
                likes.append((s, plan.step_ms, [0.0] * n, [], True))
                continue
            dets, lk = r["variants"][name]
            sc = [0.0] * n
            for i in dets:
                sc[i] = 1.0
            alerts.append((s, plan.step_ms, sc, dets, False))
            if lk is None:
                have_likes = False
            else:
                likes.append((s, plan.step_ms, lk, None, False))
        rows.append(score_row(name, "alerts", alerts, args, variant=name))
        if have_likes:
            rows.append(score_row("%s, likelihood as a continuous score" % name,
                                  "likelihood", likes, args, variant=name,
                                  row_slug=slug(name) + "-likelihood"))
    return rows


def _f(value, fmt="%.1f"):
    return "—" if value is None else fmt % value


def table(rows, published=True):
    head = ["detector", "NAB standard", "reward low FP", "reward low FN", "windows found",
            "false alerts", "precision", "recall", "F1", "median time to detect",
            "false alerts/day (quiet series)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        t = row["events"]["totals"]
        nab = row["nab"]
        if t["median_delay_ms"] is None:
            delay = "—"
        else:
            delay = "%s steps (%s)" % (_f(t["median_delay_steps"]),
                                       human_ms(t["median_delay_ms"]))
        lines.append("| " + " | ".join([
            row["name"],
            _f(nab["standard"]["score"]), _f(nab["reward_low_FP_rate"]["score"]),
            _f(nab["reward_low_FN_rate"]["score"]),
            "%d/%d" % (t["found"], t["windows"]), str(t["false_alerts"]),
            _f(t["precision"], "%.2f"), _f(t["recall"], "%.2f"), _f(t["f1"], "%.2f"),
            delay, _f(t["false_alerts_per_day_quiet"], "%.2f")]) + " |")
    if published:
        for name, std, lfp, lfn in PUBLISHED:
            lines.append("| %s (%s) | %.1f | %.1f | %.1f |%s" % (
                name, PUBLISHED_NOTE, std, lfp, lfn, " — |" * (len(head) - 4)))
    return "\n".join(lines)


def notes(rows):
    out = []
    for row in rows:
        if row["kind"] == "alerts":
            differs = [p for p in qs.PROFILES
                       if row["nab"][p]["threshold"] != 1.0
                       and row["nab_as_raised"][p]["score"] is not None]
            if differs:
                out.append("%s: NAB's threshold optimisation did better than the alerts as "
                           "raised under %s (as raised: %s)" % (
                               row["name"], ", ".join(differs), ", ".join(
                                   "%s %.1f" % (p, row["nab_as_raised"][p]["score"])
                                   for p in differs)))
        else:
            out.append("%s: threshold %s (standard profile's optimum); event-wise columns "
                       "count the records at or over it" % (
                           row["name"], _f(row.get("event_threshold"), "%.10g")))
        if row["skipped"]:
            out.append("%s: %d series skipped, scored as detecting nothing: %s" % (
                row["name"], len(row["skipped"]), ", ".join(row["skipped"])))
    return out


def per_series_text(rows, results):
    plans = {r["series"].name: r["plan"] for r in results}
    out = []
    for row in rows:
        out.append("")
        out.append("### %s" % row["name"])
        out.append("")
        out.append("| series | windows | found | false alerts | first-detection delays |")
        out.append("|---|---|---|---|---|")
        for s in row["events"]["series"]:
            plan = plans.get(s["series"])
            if plan is not None and plan.skip:
                out.append("| %s | %d | skipped: %s | | |" % (s["series"], s["windows"],
                                                             plan.skip))
                continue
            delays = ", ".join("%s steps (%s)" % (_f(st), human_ms(ms))
                               for st, ms in zip(s.get("delays_steps", []), s["delays_ms"]))
            out.append("| %s | %d | %d | %d | %s |" % (s["series"], s["windows"], s["found"],
                                                       s["false_alerts"], delays or "—"))
    return "\n".join(out)


def write_results(rows_and_scores, results_dir):
    """NAB-format result files: DIR/<row slug>/<series name>, `timestamp,anomaly_score`."""
    for row, per_series in rows_and_scores:
        for series, scores in per_series:
            path = os.path.join(results_dir, row["slug"], series.name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["timestamp", "anomaly_score"])
                for stamp, v in zip(series.stamps, scores):
                    w.writerow([stamp, repr(float(v))])


def _json_row(row):
    out = {k: v for k, v in row.items() if k != "events"}
    out["events"] = row["events"]
    return out


# ---- scoring existing result files ----

def score_results(series_list, results_dir):
    """--score-results: NAB-format result files of any detector (one per series,
    `timestamp,anomaly_score`), scored here; times come from the result files, as the
    reference scorer reads them."""
    per_series = []
    for s in series_list:
        path = os.path.join(results_dir, s.name)
        r = read_series(path, s.name)
        r.windows = s.windows
        sc = [min(1.0, max(0.0, v)) for v in r.values]
        intervals = [b - a for a, b in zip(r.times, r.times[1:])]
        step_ms = max(1, round(statistics.median(intervals) / 1000)) * 1000 if intervals \
            else None
        per_series.append((r, step_ms, sc, None, False))
    name = os.path.basename(os.path.normpath(results_dir))
    return score_row(name, "scores", per_series, None)


# ---- the command ----

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="anomalyd_eval.py",
        description="Evaluate anomalyd's detection quality on labelled series: train on each "
                    "series' first stretch, replay it, score the alerts by NAB's rules and "
                    "event-wise (docs/quality.md).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--nab", metavar="DIR",
                     help="a corpus in NAB's layout: DIR/data/<category>/<series>.csv and "
                          "DIR/labels/combined_windows.json")
    src.add_argument("--series", nargs="+", metavar="FILE.csv",
                     help="series files (time,value; ISO 8601 or Unix ms)")
    p.add_argument("--incidents", metavar="FILE.csv",
                   help="with --series: series,start,end, one incident window a row")
    p.add_argument("--anomalyd", metavar="PATH",
                   help="the anomalyd binary (default: $ANOMALYD, else build/anomalyd, else "
                        "anomalyd on PATH)")
    p.add_argument("--config", metavar="TEMPLATE.yaml",
                   help="your detector (one): its keys win over the generated ones")
    p.add_argument("--window-steps", type=int, default=DEFAULT_WINDOW_STEPS,
                   help="steps per window (default %d)" % DEFAULT_WINDOW_STEPS)
    p.add_argument("--model-mode", choices=("windowed", "stream"), default="windowed",
                   help="the model's mode (anomalyd_train.py --mode; default windowed)")
    p.add_argument("--seed", type=int, default=0,
                   help="the trainer's seed (its --seed; default 0): run a few to see how much "
                        "of a difference is the training's chance")
    p.add_argument("--train-share", type=float, default=DEFAULT_TRAIN_SHARE,
                   help="share of each series' records to train on (default %g)"
                        % DEFAULT_TRAIN_SHARE)
    p.add_argument("--train-max", type=int, default=DEFAULT_TRAIN_MAX,
                   help="at most this many records to train on (default %d)" % DEFAULT_TRAIN_MAX)
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="run this variant only (repeatable); default all: %s"
                        % "; ".join(n for n, _ in VARIANTS))
    p.add_argument("--ignore-repeats", action="store_true",
                   help="do not count repeated notifications (reason repeat) as detections")
    p.add_argument("--per-series", action="store_true", help="also print per-series lines")
    p.add_argument("--json", metavar="FILE", help="write everything machine-readable")
    p.add_argument("--results-dir", metavar="DIR",
                   help="write NAB-format result files: DIR/<variant>/<category>/<series>.csv")
    p.add_argument("--keep", metavar="DIR", help="keep the work folders (CSVs, models, configs, "
                                                 "alerts, logs) in DIR")
    p.add_argument("-j", "--jobs", type=int, default=2, help="series in parallel (default 2)")
    p.add_argument("--score-results", metavar="DIR",
                   help="score existing NAB-format result files instead of running anomalyd")
    args = p.parse_args(argv)
    problems = []
    if args.incidents and not args.series:
        problems.append("--incidents goes with --series")
    if args.window_steps < 2 or args.window_steps > 4096:
        problems.append("--window-steps must be 2 to 4096")
    if not 0 < args.train_share < 1:
        problems.append("--train-share must be between 0 and 1")
    if args.train_max < 2:
        problems.append("--train-max must be at least 2")
    if args.jobs < 1:
        problems.append("-j must be at least 1")
    if args.score_results and not args.nab:
        problems.append("--score-results goes with --nab")
    names = [n for n, _ in VARIANTS]
    for v in args.variant or ():
        if v not in names and v not in [slug(n) for n in names]:
            problems.append("--variant %r: no such variant (%s)" % (v, "; ".join(names)))
    if problems:
        p.error("; ".join(problems))
    return args


def find_anomalyd(args):
    if args.anomalyd:
        path = args.anomalyd
    elif os.environ.get("ANOMALYD"):
        path = os.environ["ANOMALYD"]
    else:
        path = os.path.join(os.path.dirname(HERE), "build", "anomalyd")
        if not os.path.exists(path):
            path = shutil.which("anomalyd") or path
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise InputError("no anomalyd binary at %s (--anomalyd PATH)" % path)
    return os.path.abspath(path)


def replay_has_scores(binary):
    """Whether this anomalyd's replay can write the per-window scores (--scores FILE)."""
    try:
        proc = subprocess.run([binary, "replay", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--scores" in proc.stdout + proc.stderr


def check_configs(binary, variants, workroot, plan):
    """Each variant's config, as generated for the first series, through the replay's own
    validation before anything is trained: a bad template or override is a usage error (2).
    A replay checks its config before it looks for a model, so a replay of no rows with a
    model folder that does not exist exits 2 for an invalid config and 1 (no model) for a
    valid one. (`--check-config` would judge it as a daemon's config, which must define its
    sources; a replay's need not.)"""
    empty = os.path.join(workroot, "check-empty.csv")
    with open(empty, "w", encoding="utf-8") as f:
        f.write("time_ms,%s,%s\n" % (KEY, FEATURE))
    for name, overrides in variants:
        for key in ("step", "window", "keys", "features", "name", "model"):
            if key in overrides:
                raise InputError("variant %r: overrides %s, which the trained model fixes"
                                 % (name, key))
        path = os.path.join(workroot, "check-%s.yaml" % slug(name))
        write_yaml(path, replay_config(deep_merge(plan.detector, overrides),
                                       os.path.join(workroot, "check-store")))
        proc = subprocess.run([binary, "replay", "-c", path, "--input", empty, "--model-dir",
                               os.path.join(workroot, "check-no-model"), "--log-level", "warn"],
                              capture_output=True)
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace").rstrip()
        if proc.returncode == 2:
            raise InputError("the config of variant %r (the detector, --config and the "
                             "variant's overrides) is invalid:\n%s" % (name, text))
        if proc.returncode not in (0, 1):
            raise ToolFailure("%s replay failed with status %d:\n%s"
                              % (binary, proc.returncode, text))


def run(args):
    template = load_template(args.config) if args.config else None
    if args.nab:
        series_list = load_nab(args.nab)
        corpus_name = os.path.basename(os.path.normpath(args.nab))
    else:
        series_list = load_series(args.series, args.incidents)
        corpus_name = "--series files"
    if args.score_results:
        row = score_results(series_list, args.score_results)
        print(table([row], published=False))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"rows": [_json_row(row)]}, f, indent=1)
        return 0
    args.anomalyd = find_anomalyd(args)
    args.scores_supported = replay_has_scores(args.anomalyd)
    variants = [(n, o) for n, o in VARIANTS
                if not args.variant or n in args.variant or slug(n) in args.variant]

    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        workroot = os.path.abspath(args.keep)
    else:
        workroot = tempfile.mkdtemp(prefix="anomalyd-eval-")
    try:
        plans = [Plan(s, args, template) for s in series_list]
        first_ok = next((p for p in plans if not p.skip), None)
        if first_ok is not None:
            check_configs(args.anomalyd, variants, workroot, first_ok)
        log("%d series, %d variant(s), anomalyd %s%s; work in %s" % (
            len(series_list), len(variants), args.anomalyd,
            " (with --scores)" if args.scores_supported else "", workroot))
        results = [None] * len(series_list)
        failure = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(evaluate_series, plan, args, workroot, variants): k
                       for k, plan in enumerate(plans)}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    results[futures[fut]] = fut.result()
                except ToolFailure as e:
                    if failure is None:
                        failure = e
                        for other in futures:
                            other.cancel()
        if failure is not None:
            raise failure
    finally:
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)

    rows = build_rows(results, variants, args)
    skipped = [r for r in results if r["plan"].skip]
    windows = sum(len(s.windows) for s in series_list)
    print("corpus: %s, %d series (%d with incidents, %d windows), %d skipped" % (
        corpus_name, len(series_list), sum(1 for s in series_list if s.windows), windows,
        len(skipped)))
    print("anomalyd: %s; window %d steps; trained on the first min(%g %%, %d) records of each "
          "series%s" % (args.anomalyd, args.window_steps, args.train_share * 100,
                        args.train_max,
                        "; repeats not counted" if args.ignore_repeats else ""))
    print()
    print(table(rows))
    for line in notes(rows):
        print()
        print("* " + line)
    if args.per_series:
        print(per_series_text(rows, results))

    if args.results_dir:
        pairs = []
        for row in rows:
            per = []
            for r in results:
                s, plan = r["series"], r["plan"]
                sc = [0.0] * len(s.times)
                if not plan.skip:
                    dets, lk = r["variants"][row["variant"]]
                    if row["kind"] == "alerts":
                        for i in dets:
                            sc[i] = 1.0
                    else:
                        sc = lk
                per.append((s, sc))
            pairs.append((row, per))
        write_results(pairs, args.results_dir)
    if args.json:
        doc = {
            "corpus": {"name": corpus_name, "series": len(series_list), "windows": windows},
            "settings": {"anomalyd": args.anomalyd, "window_steps": args.window_steps,
                         "train_share": args.train_share, "train_max": args.train_max,
                         "ignore_repeats": args.ignore_repeats,
                         "scores_supported": args.scores_supported,
                         "variants": [{"name": n, "overrides": o} for n, o in variants],
                         "template": template},
            "rows": [_json_row(r) for r in rows],
            "series": [{
                "name": r["series"].name, "records": len(r["series"].times),
                "windows": [[format_ms(a), format_ms(b)] for a, b in r["series"].windows],
                "step_ms": r["plan"].step_ms, "train_records": r["plan"].n_train,
                "probation": qs.probation(len(r["series"].times)),
                "skipped": r["plan"].skip,
                "detector": None if r["plan"].skip else r["plan"].detector,
                "detections": {n: [r["series"].stamps[i] for i in v[0]]
                               for n, v in r["variants"].items()},
            } for r in results],
            "published": {"note": PUBLISHED_NOTE, "rows": [
                {"name": n, "standard": a, "reward_low_FP_rate": b, "reward_low_FN_rate": c}
                for n, a, b, c in PUBLISHED]},
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except InputError as e:
        log("error: %s" % e)
        return 2
    except ToolFailure as e:
        log("error: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Detection-quality scoring for anomalyd's evaluation tool (docs/quality.md).

Two sets of figures over a corpus of labelled series:

* **NAB scores**: the Numenta Anomaly Benchmark's published scoring rules (NAB v1.1),
  implemented here from the rules: a probation stretch at the start of each series that is
  not scored, scaled-sigmoid credit for the earliest detection in each labelled window,
  false positives weighted (less right after a window), a penalty for each missed window,
  three application profiles, one threshold optimised over the whole corpus for continuous
  scores, and a normalisation that gives the null detector 0 and the perfect one 100.
* **Event-wise metrics**: an incident (a labelled window) counts once, however many
  detections fall in it; precision, recall, F1, time to detect, false alerts.

Standard library only. Records are indexed 0..n-1 in time order; times are integers (ms).
"""

import bisect
import math
import statistics

# NAB's probation: the first 15 % of a series, at most 15 % of 5000 = 750 records, is for
# the detector to learn; nothing in it is scored.
PROBATION_SHARE = 0.15
PROBATION_MAX = 750


class Profile:
    """An application profile: the weight of a true positive, of a false positive and of a
    missed window (a false negative)."""

    __slots__ = ("tp", "fp", "fn")

    def __init__(self, tp, fp, fn):
        self.tp, self.fp, self.fn = tp, fp, fn

    def __repr__(self):
        return "Profile(tp=%g, fp=%g, fn=%g)" % (self.tp, self.fp, self.fn)


# NAB v1.1's three profiles, in the order the scoreboard lists them.
PROFILES = {
    "standard": Profile(1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile(1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile(1.0, 0.11, 2.0),
}


def probation(n, share=PROBATION_SHARE, cap=PROBATION_MAX):
    """How many records at the start of a series of n are not scored: min(floor(15 % of n),
    750). Records 0..probation(n)-1 are in probation."""
    return min(math.floor(share * n), cap)


def sigmoid_credit(position):
    """NAB's scaled sigmoid, 2 / (1 + e^(5 x)) - 1, and -1 beyond x = 3. Inside a window x
    runs from -1 (the first record) to about 0 (the last): about 0.987 down to about 0;
    after a window x is the distance past its end in window widths: from about 0 just
    after it, down to -1 far from it."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


# The credit of a detection at a window's very first record; inside windows credits are
# divided by it, so the earliest possible detection earns exactly the profile's tp weight.
MAX_TP_CREDIT = sigmoid_credit(-1.0)


def window_spans(times, windows):
    """Each labelled window (start, end), inclusive, as the index span (lo, hi) of the
    records inside it, or None when no record falls inside it. times must be sorted."""
    spans = []
    for start, end in windows:
        lo = bisect.bisect_left(times, start)
        hi = bisect.bisect_right(times, end) - 1
        spans.append((lo, hi) if lo <= hi else None)
    return spans


class Series:
    """One series as the scorer sees it.

    n        number of records
    spans    labelled windows as index spans (lo, hi), sorted, not overlapping; None for a
             window with no record in it (it counts nowhere)
    scores   optional: an anomaly score per record in [0, 1] (for the NAB scores)
    detections  optional: sorted record indices that are detections (event-wise metrics)
    times, window_times, step_ms   optional: record times, the windows' (start, end) and
             the step, for times to detect and false alerts per day
    first    first scored record: probation(n) unless given
    quiet    the series has no labelled incident (false alerts per day are measured on
             these); by default, when spans is empty
    """

    def __init__(self, name, n, spans, scores=None, detections=None, times=None,
                 window_times=None, step_ms=None, first=None, quiet=None):
        self.name, self.n = name, n
        self.quiet = not spans if quiet is None else quiet
        self.spans = [s for s in spans if s is not None]
        self.spans.sort()
        self.scores, self.detections = scores, detections
        self.times, self.window_times, self.step_ms = times, window_times, step_ms
        if window_times is not None:
            kept = sorted((s, w) for s, w in zip(spans, window_times) if s is not None)
            self.window_times = [w for _, w in kept]
        self.first = probation(n) if first is None else first

    def counted(self):
        """Indices (into self.spans) of the windows that count: NAB leaves out a window
        that lies entirely inside the probation, since nothing in it is scored."""
        return [k for k, (lo, hi) in enumerate(self.spans) if hi >= self.first]


def record_weights(series, profile):
    """For each scored record (index >= series.first): (index, weighted credit, k) where k is
    the index of the window the record lies in, or None outside windows.

    Inside a window (lo, hi) of width w = hi - lo + 1, a detection at record i sits at
    x = -(hi - i + 1) / w and earns sigmoid(x) / sigmoid(-1) * tp: tp at the window's first
    record, falling towards 0 at its last. Outside windows a detection costs fp times
    -1 before the first window, and after a window sigmoid(|i - hi| / (hi - lo)): nearly 0
    just after it (a late detection of the same incident), down to -1 three window widths
    on."""
    out = []
    spans = series.spans
    w = 0
    previous = None
    for i in range(series.first, series.n):
        while w < len(spans) and i > spans[w][1]:
            previous = spans[w]
            w += 1
        if w < len(spans) and spans[w][0] <= i:
            lo, hi = spans[w]
            credit = sigmoid_credit(-(hi - i + 1) / (hi - lo + 1)) / MAX_TP_CREDIT
            out.append((i, credit * profile.tp, w))
        else:
            if previous is None:
                credit = -1.0
            else:
                lo, hi = previous
                credit = sigmoid_credit(abs(i - hi) / max(hi - lo, 1))
            out.append((i, credit * profile.fp, None))
    return out


def normalise(raw, windows, profile):
    """100 * (raw - null) / (perfect - null), where the null detector (nothing detected)
    scores -fn per window and the perfect one (each window detected at its first record,
    nothing else) tp per window. None without windows: there is nothing to normalise by."""
    null, perfect = -profile.fn * windows, profile.tp * windows
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


def _corpus_points(corpus, profile):
    points, windows = [], 0
    keys = {}
    for s_index, series in enumerate(corpus):
        counted = set(series.counted())
        windows += len(counted)
        for k in counted:
            keys[(s_index, k)] = None
        for i, weight, k in record_weights(series, profile):
            score = series.scores[i]
            points.append((score, weight, (s_index, k) if k is not None else None))
    return points, keys, windows


def nab_score(corpus, profile, threshold=None):
    """The corpus's NAB score under one profile.

    A record is a detection when its score is >= the threshold. Each counted window earns
    the best (the earliest) credit among its detections, or -fn when it has none; every
    detection outside windows adds its (negative) weight. The raw total is normalised.

    threshold None: NAB's optimisation: every distinct score in the corpus is tried as the
    threshold (and one above every score: nothing detected), the best total wins. Returns
    {"score", "raw", "threshold", "windows", "detected", "false_positives"}, threshold None
    when detecting nothing was best."""
    points, keys, windows = _corpus_points(corpus, profile)
    best_window = dict.fromkeys(keys, None)  # credit of the best detection so far

    def total(fp_sum):
        return fp_sum + sum(-profile.fn if c is None else c for c in best_window.values())

    if threshold is not None:
        fp_sum, fps = 0.0, 0
        for score, weight, key in points:
            if score >= threshold:
                if key is None:
                    fp_sum += weight
                    fps += 1
                elif best_window[key] is None or weight > best_window[key]:
                    best_window[key] = weight
        raw = total(fp_sum)
        detected = sum(c is not None for c in best_window.values())
        return {"score": normalise(raw, windows, profile), "raw": raw, "threshold": threshold,
                "windows": windows, "detected": detected, "false_positives": fps}

    # The sweep: lower the threshold one distinct score at a time, keeping the running total.
    points.sort(key=lambda p: -p[0])
    running = -profile.fn * windows
    best = (running, None, 0, 0)  # raw, threshold, detected windows, false positives
    fp_sum, fps, detected = 0.0, 0, 0
    i = 0
    while i < len(points):
        threshold_here = points[i][0]
        while i < len(points) and points[i][0] == threshold_here:
            _, weight, key = points[i]
            if key is None:
                fp_sum += weight
                fps += 1
                running += weight
            else:
                old = best_window[key]
                if old is None:
                    best_window[key] = weight
                    running += weight + profile.fn
                    detected += 1
                elif weight > old:
                    best_window[key] = weight
                    running += weight - old
            i += 1
        if running > best[0]:
            best = (running, threshold_here, detected, fps)
    raw, threshold, detected, fps = best
    return {"score": normalise(raw, windows, profile), "raw": raw, "threshold": threshold,
            "windows": windows, "detected": detected, "false_positives": fps}


def nab_scores(corpus, threshold=None):
    """nab_score under each of PROFILES: {profile name: result}."""
    return {name: nab_score(corpus, profile, threshold) for name, profile in PROFILES.items()}


def _median(values):
    return statistics.median(values) if values else None


def event_metrics(corpus):
    """Event-wise figures from each series' detections (sorted record indices); detections
    in the probation are ignored, and so are windows that lie entirely inside it.

    Per series and in total: windows (incidents), found (with at least one detection inside:
    no point-adjust, an incident counts once), in_window (detections inside windows),
    false_alerts (detections outside windows), delays_ms / delays_steps (first detection in
    each found window minus the window's start, when times are known). Totals add precision
    (in_window / all detections), recall (found / windows), F1, the median delay, and false
    alerts per day on the series without incidents (their scored span: first scored record
    to last record plus one step)."""
    per_series = []
    totals = {"windows": 0, "found": 0, "in_window": 0, "false_alerts": 0, "detections": 0}
    delays_ms, delays_steps = [], []
    quiet_false, quiet_ms = 0, 0
    for series in corpus:
        counted = series.counted()
        dets = [i for i in series.detections if i >= series.first]
        found, in_window, delays = 0, 0, []
        inside = set()
        for k in counted:
            lo, hi = series.spans[k]
            lo_i = bisect.bisect_left(dets, lo)
            hi_i = bisect.bisect_right(dets, hi)
            inside.update(range(lo_i, hi_i))
            if hi_i > lo_i:
                found += 1
                if series.times is not None and series.window_times is not None:
                    delay = series.times[dets[lo_i]] - series.window_times[k][0]
                    delays.append(delay)
        # Detections inside an uncounted window (all in probation) cannot exist after the
        # probation, so every detection not inside a counted window is a false alert.
        in_window = len(inside)
        false_alerts = len(dets) - in_window
        row = {"series": series.name, "windows": len(counted), "found": found,
               "in_window": in_window, "false_alerts": false_alerts, "detections": len(dets),
               "delays_ms": delays}
        if series.step_ms:
            row["delays_steps"] = [d / series.step_ms for d in delays]
            delays_steps += row["delays_steps"]
        delays_ms += delays
        per_series.append(row)
        for key in totals:
            totals[key] += row[key]
        if series.quiet and series.times is not None and series.first < series.n:
            quiet_false += false_alerts
            quiet_ms += (series.times[-1] - series.times[series.first]
                         + (series.step_ms or 0))
    precision = totals["in_window"] / totals["detections"] if totals["detections"] else None
    recall = totals["found"] / totals["windows"] if totals["windows"] else None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    elif recall is not None and (precision is not None or recall == 0):
        f1 = 0.0  # nothing found: F1 is 0, with or without (false) detections
    else:
        f1 = None
    totals.update({
        "precision": precision, "recall": recall, "f1": f1,
        "median_delay_ms": _median(delays_ms), "median_delay_steps": _median(delays_steps),
        "quiet_false_alerts": quiet_false,
        "quiet_days": quiet_ms / 86_400_000 if quiet_ms else 0.0,
        "false_alerts_per_day_quiet": quiet_false / (quiet_ms / 86_400_000) if quiet_ms
        else None,
    })
    return {"totals": totals, "series": per_series}

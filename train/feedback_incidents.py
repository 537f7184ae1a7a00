#!/usr/bin/python3
"""Operators' marks as labelled incidents for the quality evaluation (docs/feedback.md,
docs/quality.md): reads the JSON lines the daemon keeps in <store>/<model>/feedback.jsonl (the
last line of an alert's id winning) and writes the CSV that `anomalyd_eval.py --incidents`
takes, `series,start,end`: one row per alert marked a true positive, from the start of its
first anomalous bucket (from_ms - step_ms) to the end of the window that resolved it.

The series is the value of one of the mark's labels (--label; by default the only one), which
must name the evaluation's --series file (its base name, with or without .csv). False
positives need no row: everything outside the incidents is normal to the evaluation. A true
positive still firing when it was marked (through_ms null) is left out, with a note, until a
later line closes it.

  feedback_incidents.py [--detector NAME] [--label LABEL] [-o FILE] MARKS.jsonl...

Exit status: 0 written; 2 usage or input error.
"""

import argparse
import csv
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import feedback_marks  # noqa: E402

PROG = "feedback_incidents"


def log(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


def format_ms(ms):
    """RFC 3339 with ms, as the daemon writes times."""
    dt = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def main(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("marks", nargs="+", metavar="MARKS.jsonl")
    p.add_argument("--detector", help="only this detector's marks")
    p.add_argument("--label", help="the label whose value names the series")
    p.add_argument("-o", "--output", help="the CSV to write (default: standard output)")
    args = p.parse_args(argv)
    rows = []
    try:
        marks = feedback_marks.read_marks(args.marks, args.detector, log)
    except feedback_marks.MarksError as e:
        raise SystemExit("%s: %s" % (PROG, e))
    for mark, where in marks:
        if mark.get("verdict") != "true_positive":
            continue
        labels = mark.get("labels") or {}
        label = args.label or (next(iter(labels)) if len(labels) == 1 else None)
        if label is None or label not in labels:
            log("%s: give --label: the mark's labels are %s" % (where, sorted(labels)))
            return 2
        if mark.get("through_ms") is None:
            log("%s: alert %s was still firing when marked; left out" % (where, mark["id"]))
            continue
        start = mark["from_ms"] - int(mark.get("step_ms") or 0)
        rows.append((labels[label], format_ms(start), format_ms(mark["through_ms"])))
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["series", "start", "end"])
        w.writerows(sorted(rows))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

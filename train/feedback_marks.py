"""Operators' marks of alerts (docs/feedback.md), as the daemon keeps them in
<store>/<model>/feedback.jsonl: one JSON object a line, the last line of an alert's id winning.
Shared by the reference trainer (which leaves true positives out of what it learns from) and
feedback_incidents.py (which turns them into labelled incidents)."""

import json


class MarksError(Exception):
    """A marks file that cannot be read at all."""


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def is_mark(obj):
    """Whether obj has every field a mark must have, of the right type."""
    return (isinstance(obj, dict) and isinstance(obj.get("id"), str)
            and obj.get("verdict") in ("false_positive", "true_positive")
            and isinstance(obj.get("labels"), dict)
            and _is_int(obj.get("from_ms"))
            and (obj.get("through_ms") is None or _is_int(obj.get("through_ms"))))


def read_marks(paths, detector, log):
    """The marks of paths, as (mark, "path:line") with the last line of each id, those of
    detector only (None: all; a mark without a detector is everyone's). Lines that are not
    marks are skipped, each told to log once; a file that cannot be read raises MarksError."""
    by_id = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        mark = json.loads(line)
                    except ValueError:
                        log("%s:%d: not a mark (not JSON); skipped" % (path, lineno))
                        continue
                    if not is_mark(mark):
                        log("%s:%d: not a mark; skipped" % (path, lineno))
                        continue
                    by_id[mark["id"]] = (mark, "%s:%d" % (path, lineno))
        except OSError as e:
            raise MarksError("%s: %s" % (path, e.strerror)) from None
    return [(m, where) for m, where in by_id.values()
            if detector is None or m.get("detector") in (None, detector)]

#!/usr/bin/env bash
# Lints a rendered registry with the real promtool: the exposition text must parse and follow
# the Prometheus naming rules. Usage: test_promtool_metrics.sh <metrics-sample binary>
set -euo pipefail

sample=${1:?usage: $0 <metrics-sample>}
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIP: promtool not installed" >&2
  exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$sample" >"$tmp/metrics.txt"
# Guard against a vacuous pass: the sample must really contain every kind of metric.
for want in '# TYPE anomalyd_sample_events_total counter' \
            '# TYPE anomalyd_sample_up gauge' \
            '# TYPE anomalyd_sample_score_duration_seconds histogram' \
            'anomalyd_sample_score_duration_seconds_bucket{backend="cpu",le="+Inf"} 6' \
            '# TYPE process_cpu_seconds_total counter'; do
  if ! grep -qF -- "$want" "$tmp/metrics.txt"; then
    echo "FAIL: sample output lacks: $want" >&2
    cat "$tmp/metrics.txt" >&2
    exit 1
  fi
done

# promtool exits non-zero on parse errors and lint problems; a clean run prints nothing, so
# any output at all counts as a problem too.
status=0
promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.out" 2>&1 || status=$?
if [ "$status" -ne 0 ] || [ -s "$tmp/promtool.out" ]; then
  echo "FAIL: promtool check metrics (exit $status):" >&2
  cat "$tmp/promtool.out" >&2
  echo "--- input ---" >&2
  cat "$tmp/metrics.txt" >&2
  exit 1
fi
echo "promtool check metrics: clean ($(grep -vc '^#' "$tmp/metrics.txt") series)"

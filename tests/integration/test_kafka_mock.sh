#!/usr/bin/env bash
# Integration test for the Kafka test tooling (docs/testing-kafka-mock.md): kafka-mock must serve
# real Kafka clients in other processes (kcat) for metadata, produce, plain and group consume,
# commit offsets (checked with kafka-committed), survive a broker going down and up through its
# control channel, keep running after EOF on stdin, and exit promptly on SIGTERM.
#
# Needs AD_BUILD_DIR (set by ad_integration_test); skips (77) without kcat.
set -euo pipefail

if ! command -v kcat >/dev/null 2>&1; then
    echo "SKIP: kcat is not installed" >&2
    exit 77
fi

: "${AD_BUILD_DIR:?AD_BUILD_DIR must name the build folder}"
MOCK=$AD_BUILD_DIR/tests/tools/kafka-mock
COMMITTED=$AD_BUILD_DIR/tests/tools/kafka-committed
N=1000
# Upper bound for any single client step; the consumer group join alone takes about 3 s.
STEP_TIMEOUT=30

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_kafka_mock.XXXXXX")
MOCK_PID=
CTL_IN=
CTL_OUT=

cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n $MOCK_PID ]] && kill -0 "$MOCK_PID" 2>/dev/null; then
        kill -KILL "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
    fi
    if ((rc != 0)); then
        for f in "$TMP"/*.err; do
            [[ -s $f ]] && { echo "--- ${f##*/}:"; cat "$f"; }
        done >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

step() {
    echo "--- $*"
}

for bin in "$MOCK" "$COMMITTED"; do
    [[ -x $bin ]] || fail "$bin is not built"
done

# Sends one control command and leaves the answer in REPLY_LINE.
ctl() {
    printf '%s\n' "$1" >&"$CTL_IN"
    if ! read -r -t 10 -u "$CTL_OUT" REPLY_LINE; then
        kill -0 "$MOCK_PID" 2>/dev/null || fail "kafka-mock died before answering '$1'"
        fail "no answer to '$1' within 10 s"
    fi
}

ctl_ok() {
    ctl "$1"
    [[ $REPLY_LINE == ok ]] || fail "'$1' answered '$REPLY_LINE', expected 'ok'"
}

ctl_error() {
    ctl "$1"
    [[ $REPLY_LINE == error:* ]] || fail "'$1' answered '$REPLY_LINE', expected 'error: ...'"
}

# Prints "PARTITIONS REPLICAS" of topic $1 from a kcat -L listing on stdin (replicas of its
# first partition), nothing if the topic is not listed or carries an error.
topic_shape() {
    awk -v want="$1" '
        /^  topic "/ {
            cur = $2; gsub(/"/, "", cur)
            ok = (cur == want && $0 ~ /partitions:$/)
            if (ok) parts = $4
            next
        }
        ok && /^    partition / && !reps {
            sub(/.*replicas: /, ""); sub(/,? isrs:.*/, "")
            reps = split($0, r, ",")
        }
        END { if (parts != "") print parts, reps }'
}

# librdkafka 2.0.2's mock ignores the replication factor it is given and always makes min(3,
# brokers) replicas, so only the partition count is checked where a factor was asked for.
# Checks topic $1 in the last listing: $2 partitions; replication $3 is only reported.
check_partitions() {
    local shape
    shape=$(topic_shape "$1" <"$TMP/meta.txt")
    [[ ${shape%% *} == "$2" ]] || fail "topic $1: got '$shape', expected $2 partitions"
    [[ ${shape#* } == "$3" ]] ||
        echo "note: topic $1 asked for replication $3, the mock reports ${shape#* } replicas"
}

# kcat -L for all topics. Naming a topic (-L -t) would make the mock auto-create it with its
# default shape, which would hide a broken --topic.
list_topics() {
    timeout "$STEP_TIMEOUT" kcat -b "$BOOT" -L >"$TMP/meta.txt" 2>"$TMP/kcat-meta.err" ||
        fail "kcat -L failed"
}

# Consumes topic logs from the beginning of every partition to EOF, one "key:value" per line.
consume_all() {
    timeout "$STEP_TIMEOUT" kcat -b "$BOOT" -C -t logs -o beginning -e -q \
        -f '%p\t%k:%s\n' >"$TMP/$1" 2>"$TMP/kcat-consume.err" || fail "kcat -C failed ($?)"
}

# ---------------------------------------------------------------------------------------------
step "start kafka-mock --brokers 3 --topic logs:4 --topic wide:7:2"
# Both FIFOs are opened read-write here so neither open blocks waiting for the other end, and
# the mock gets its own read-only/write-only ends; it must not inherit ours, or its stdin would
# never see EOF when we close our end at the end of the test.
mkfifo "$TMP/ctl.in" "$TMP/ctl.out"
exec {CTL_IN}<>"$TMP/ctl.in" {CTL_OUT}<>"$TMP/ctl.out"
"$MOCK" --brokers 3 --topic logs:4 --topic wide:7:2 \
    <"$TMP/ctl.in" >"$TMP/ctl.out" 2>"$TMP/mock.err" {CTL_IN}>&- {CTL_OUT}>&- &
MOCK_PID=$!

if ! read -r -t 10 -u "$CTL_OUT" BOOT; then
    kill -0 "$MOCK_PID" 2>/dev/null || fail "kafka-mock exited before printing bootstraps"
    fail "no bootstrap line within 10 s"
fi
[[ $BOOT =~ ^127\.0\.0\.1:[0-9]+,127\.0\.0\.1:[0-9]+,127\.0\.0\.1:[0-9]+$ ]] ||
    fail "bootstrap line '$BOOT' is not three loopback brokers"
echo "bootstrap servers: $BOOT"

# ---------------------------------------------------------------------------------------------
step "metadata: kcat -L sees the topics as created"
list_topics
grep -q '^ 3 brokers:$' "$TMP/meta.txt" || fail "kcat -L does not list 3 brokers"
shape=$(topic_shape logs <"$TMP/meta.txt")
[[ $shape == "4 3" ]] || fail "topic logs: got '$shape', expected 4 partitions, 3 replicas"
check_partitions wide 7 2

ctl_ok "topic-create made-by-ctl 3 1"
ctl_error "topic-create made-by-ctl 3 1"
ctl_error "topic-create bad/name 1"
ctl_error "topic-create too-many-replicas 1 4"
ctl_error "broker-down 4"
ctl_error "no-such-command"
list_topics
check_partitions made-by-ctl 3 1

# ---------------------------------------------------------------------------------------------
step "produce $N keyed messages, consume them back (no group)"
seq 0 $((N - 1)) | awk -v n="$N" '{ printf "key-%04d:payload %d of %d\n", $1, $1, n }' \
    >"$TMP/produced.txt"
timeout "$STEP_TIMEOUT" kcat -b "$BOOT" -P -K: -t logs <"$TMP/produced.txt" \
    2>"$TMP/kcat-produce.err" || fail "kcat -P failed ($?)"
consume_all consumed.tsv
cut -f2 "$TMP/consumed.tsv" | sort >"$TMP/consumed.txt"
sort "$TMP/produced.txt" >"$TMP/expected.txt"
diff -q "$TMP/expected.txt" "$TMP/consumed.txt" >/dev/null ||
    fail "consumed messages differ from produced ($(wc -l <"$TMP/consumed.txt") lines back)"
used=$(cut -f1 "$TMP/consumed.tsv" | sort -u | wc -l)
((used == 4)) || fail "keyed messages landed in $used partitions, expected all 4"

# ---------------------------------------------------------------------------------------------
step "consumer group: consume $N in group mode, check the committed offsets"
GROUP=ad-test-$$
# Group mode never exits at EOF (-e), so -c N ends it. kcat then calls
# rd_kafka_consumer_close(), which with the defaults (enable.auto.commit and
# enable.auto.offset.store true) commits the offset after every message it handed out before it
# leaves the group, so the commits are in place when kcat exits. (Spelling the default out as
# -X enable.auto.commit=true only earns a CONFWARN about the deprecated topic property
# auto.commit.enable from kcat 1.7.1.)
timeout "$STEP_TIMEOUT" kcat -b "$BOOT" -G "$GROUP" -o beginning -c "$N" -q -f '%k:%s\n' logs \
    >"$TMP/group.txt" 2>"$TMP/kcat-group.err" || fail "kcat -G failed or timed out ($?)"
sort "$TMP/group.txt" | diff -q "$TMP/expected.txt" - >/dev/null ||
    fail "group consumer got different messages ($(wc -l <"$TMP/group.txt") lines)"

"$COMMITTED" -b "$BOOT" -g "$GROUP" -t logs -w >"$TMP/committed.txt" 2>"$TMP/committed.err" ||
    fail "kafka-committed failed"
cat "$TMP/committed.txt"
awk -v n="$N" '
    $1 == "sum" { sum = $2; next }
    { parts++; if ($2 != $3) bad = bad " " $1 " (" $2 " != " $3 ")" }
    END {
        if (parts != 4) { print "expected 4 partitions, got " parts; exit 1 }
        if (bad != "") { print "committed != high watermark for partition" bad; exit 1 }
        if (sum != n) { print "committed offsets sum to " sum ", expected " n; exit 1 }
    }' "$TMP/committed.txt" || fail "committed offsets are wrong"

# A group that never consumed must show nothing committed: the check above is not an echo of
# the watermarks.
"$COMMITTED" -b "$BOOT" -g "$GROUP-unused" -t logs >"$TMP/unused.txt" 2>"$TMP/committed.err" ||
    fail "kafka-committed failed for an unused group"
grep -qx 'sum 0' "$TMP/unused.txt" || fail "unused group shows commits: $(tr '\n' ' ' <"$TMP/unused.txt")"
if "$COMMITTED" -b "$BOOT" -g "$GROUP" -t no-such-topic >/dev/null 2>"$TMP/committed.err"; then
    fail "kafka-committed succeeded for a topic that does not exist"
fi

# ---------------------------------------------------------------------------------------------
step "broker 1 down and up through the control channel, then produce 10 more"
broker1_port=$(awk '$1 == "broker" && $2 == "1" { n = split($4, a, ":"); print a[n] }' \
    "$TMP/meta.txt")
[[ $broker1_port =~ ^[0-9]+$ ]] || fail "cannot find broker 1's port in kcat -L"
# The control commands are synchronous: by the time 'ok' arrives the listener is closed (or
# listening again), so a connection attempt right after is a fair probe.
ctl_ok "broker-down 1"
if (exec 3<>"/dev/tcp/127.0.0.1/$broker1_port") 2>/dev/null; then
    fail "broker 1 still accepts connections after broker-down"
fi
ctl_ok "broker-up 1"
(exec 3<>"/dev/tcp/127.0.0.1/$broker1_port") 2>/dev/null ||
    fail "broker 1 does not accept connections after broker-up"

seq 0 9 | awk '{ printf "after-%d:restart-%d\n", $1, $1 }' >"$TMP/more.txt"
timeout "$STEP_TIMEOUT" kcat -b "$BOOT" -P -K: -t logs <"$TMP/more.txt" \
    2>"$TMP/kcat-produce.err" || fail "kcat -P after broker-up failed ($?)"
consume_all all.tsv
cut -f2 "$TMP/all.tsv" | sort >"$TMP/all.txt"
sort "$TMP/produced.txt" "$TMP/more.txt" | diff -q - "$TMP/all.txt" >/dev/null ||
    fail "after the restart the topic does not hold the $((N + 10)) messages produced"

# ---------------------------------------------------------------------------------------------
step "EOF on stdin keeps the cluster running"
exec {CTL_IN}>&-
for ((i = 0; i < 100; i++)); do
    grep -q 'stdin closed' "$TMP/mock.err" && break
    sleep 0.1
done
grep -q 'stdin closed' "$TMP/mock.err" || fail "kafka-mock did not report EOF on stdin"
kill -0 "$MOCK_PID" 2>/dev/null || fail "kafka-mock exited at EOF on stdin"
list_topics
[[ $(topic_shape logs <"$TMP/meta.txt") == "4 3" ]] || fail "no metadata after EOF on stdin"

# ---------------------------------------------------------------------------------------------
step "SIGTERM: kafka-mock exits 0 within 10 s"
start_ns=$(date +%s%N)
kill -TERM "$MOCK_PID"
# bash reaps its exited children as they go, so kill -0 fails as soon as the mock is gone; wait
# then still reports its exit status.
for ((i = 0; i < 100; i++)); do
    kill -0 "$MOCK_PID" 2>/dev/null || break
    sleep 0.1
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
kill -0 "$MOCK_PID" 2>/dev/null && fail "kafka-mock still running 10 s after SIGTERM"
status=0
wait "$MOCK_PID" || status=$?
MOCK_PID=
((status == 0)) || fail "kafka-mock exited with status $status after SIGTERM"
echo "kafka-mock exited 0 after ${elapsed_ms} ms"

echo "PASS"

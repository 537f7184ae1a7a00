"""What the Python integration tests share: the anomalyd binary as a process with its JSON
logs collected, the Kafka mock cluster, and waiting. Standard library only."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BUILD = os.environ.get("AD_BUILD_DIR", "build")
SOURCE = os.environ.get("AD_SOURCE_DIR", ".")
ANOMALYD = os.path.join(BUILD, "anomalyd")
TOOLS = os.path.join(BUILD, "tests", "tools")


# Daemons started by this process and not closed: a wait fails at once, with the daemon's last
# log lines, when one of them exits without having been told to (a crash, a sanitizer report).
_running = []


def _check_running(what):
    for d in list(_running):
        if not d.stopping and d.proc.poll() is not None:
            d.reader.join(timeout=5)
            raise AssertionError("anomalyd exited with status %s while waiting for %s:\n%s"
                                 % (d.proc.returncode, what, "".join(d.lines[-40:])))


def parse_metrics(text):
    """Every series of a Prometheus text exposition as {series: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def wait_for(what, check, timeout=30.0, interval=0.05):
    """Returns check()'s first truthy value, or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        _check_running(what)
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


class Daemon:
    """anomalyd running on a config in a temporary folder, with its JSON logs collected."""

    def __init__(self, config_text, extra_args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="anomalyd-it-")
        self.config = os.path.join(self.dir, "anomalyd.yaml")
        self.write_config(config_text)
        self.proc = subprocess.Popen(
            [ANOMALYD, "-c", self.config, "--log-format", "json", *extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, **(env or {})})
        self.lines = []
        self.stopping = False
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        started = wait_for("the admin address", lambda: self.find("admin endpoint listening")
                           or self.proc.poll() is not None)
        if self.proc.poll() is not None:
            self.reader.join(timeout=5)
            raise AssertionError("anomalyd exited: %s" % "".join(self.lines))
        self.address = started["address"]
        _running.append(self)

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line)

    def records(self):
        with self.lock:
            lines = list(self.lines)
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                # Every record is one JSON line: anything else is a crash or a sanitizer's report,
                # which takes a moment to finish writing.
                time.sleep(1)
                with self.lock:
                    report = "".join(self.lines[i:i + 60])
                raise AssertionError("anomalyd wrote a line that is not a log record:\n"
                                     + report) from None
        return out

    def find(self, msg):
        for r in self.records():
            if r.get("msg") == msg:
                return r
        return None

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_config(self, text):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)

    def get(self, path, method="GET"):
        req = urllib.request.Request("http://%s%s" % (self.address, path), method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def status(self):
        code, _, body = self.get("/status")
        assert code == 200, code
        return json.loads(body)

    def metrics(self):
        """Every series of /metrics as {series: value}."""
        _, _, body = self.get("/metrics")
        return parse_metrics(body)

    def metric(self, series):
        return self.metrics().get(series)

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.stopping = True
        self.proc.send_signal(sig)

    def close(self):
        self.stopping = True
        if self in _running:
            _running.remove(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # A failed test shows what the daemon said last, so that CI's log explains it.
            with self.lock:
                tail = self.lines[-120:]
            sys.stderr.write("---- the daemon's last %d log lines ----\n%s----\n"
                             % (len(tail), "".join(tail)))
        self.close()


class KafkaMock:
    """librdkafka's mock cluster (tests/tools/kafka-mock) on loopback."""

    def __init__(self, *topics, brokers=1):
        args = [os.path.join(TOOLS, "kafka-mock"), "--brokers", str(brokers)]
        for t in topics:
            args += ["--topic", t]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            raise AssertionError("kafka-mock did not start: " + self.proc.stderr.read())

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def produce(self, topic, keyed_lines, partition=None):
        """Produces (key, value) pairs with kcat, in order (to one partition, if given)."""
        data = "".join("%s\t%s\n" % (k, v) for k, v in keyed_lines)
        where = ["-p", str(partition)] if partition is not None else []
        subprocess.run(["kcat", "-b", self.bootstrap, "-P", "-t", topic, "-K", "\t", *where,
                        "-X", "log.connection.close=false"],
                       input=data, text=True, check=True, timeout=60)

    def consume(self, topic, count, fmt="%s\n", timeout=30):
        r = subprocess.run(["kcat", "-b", self.bootstrap, "-C", "-t", topic, "-o", "beginning",
                            "-c", str(count), "-e", "-q", "-f", fmt],
                           capture_output=True, text=True, timeout=timeout)
        return r.stdout

    def committed(self, group, topic):
        """{partition: committed offset} and their sum (kafka-committed)."""
        r = subprocess.run([os.path.join(TOOLS, "kafka-committed"), "-b", self.bootstrap,
                            "-g", group, "-t", topic], capture_output=True, text=True,
                           timeout=60)
        offsets, total = {}, None
        for line in r.stdout.splitlines():
            a, b = line.split()[:2]
            if a == "sum":
                total = int(b)
            else:
                offsets[int(a)] = int(b)
        return offsets, total

    def commits(self, group, topic):
        """{partition: (committed offset, the commit's metadata parsed as JSON, or None)}."""
        r = subprocess.run([os.path.join(TOOLS, "kafka-committed"), "-b", self.bootstrap,
                            "-g", group, "-t", topic, "-m"], capture_output=True, text=True,
                           timeout=60, check=True)
        out = {}
        for line in r.stdout.splitlines():
            fields = line.split(" ", 2)
            if fields[0] != "sum":
                meta = None if fields[2] == "-" else json.loads(fields[2])
                out[int(fields[0])] = (int(fields[1]), meta)
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except BrokenPipeError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def publish_model(store, staging, model, version, steps, step_ms, features, special=None):
    """Publishes a valid version with random weights (tests/tools/model-write) as the trainer
    does: written in staging (so that nothing sees it half made), moved into the store, then
    CURRENT names it. special (file name, "fifo" or "dir") replaces one of its files."""
    subprocess.run([os.path.join(TOOLS, "model-write"), staging, model, version, str(steps),
                    str(step_ms), *features], check=True, capture_output=True, timeout=60)
    if special:
        path = os.path.join(staging, model, version, special[0])
        os.unlink(path)
        (os.mkfifo if special[1] == "fifo" else os.mkdir)(path)
    os.makedirs(os.path.join(store, model), exist_ok=True)
    os.rename(os.path.join(staging, model, version), os.path.join(store, model, version))
    tmp = os.path.join(store, model, ".CURRENT.tmp")
    with open(tmp, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, os.path.join(store, model, "CURRENT"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusProcess:
    """A real prometheus on loopback, in a temporary folder of its own (dir), started by start
    and stopped, folder and all, by close."""

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = None

    def start(self, config_text, tsdb, *args):
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(config_text)
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + tsdb,
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn", *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Prometheus(PrometheusProcess):
    """A real prometheus on loopback serving known data: OpenMetrics text turned into TSDB
    blocks with promtool."""

    def __init__(self, openmetrics_text):
        super().__init__("anomalyd-prom-")
        data = os.path.join(self.dir, "data.om")
        with open(data, "w") as f:
            f.write(openmetrics_text)
        tsdb = os.path.join(self.dir, "tsdb")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", data, tsdb],
                       check=True, capture_output=True, timeout=120)
        self.start("global:\n  evaluation_interval: 1m\n", tsdb,
                   "--storage.tsdb.retention.time=30d")
        # The API answers 503 while the TSDB opens, even after /-/ready says ready.
        wait_for("prometheus", self._answers, timeout=60, interval=0.1)

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited; see " + self.log.name)
        try:
            with urllib.request.urlopen(self.url + "/api/v1/query?query=1", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


class Redis:
    """A real redis-server on loopback, its data in a temporary folder. The append-only file is
    synced on every write, so a server killed with SIGKILL comes back with what it
    acknowledged, as a production Redis configured for durability does."""

    def __init__(self, password=None):
        self.port = free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="anomalyd-redis-")
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for("redis-server to answer", lambda: self._ping() or self.proc.poll() is not None,
                 timeout=20)
        if self.proc.poll() is not None:
            with open(os.path.join(self.dir, "redis.log")) as f:
                raise AssertionError("redis-server did not start: " + f.read())

    def _ping(self):
        try:
            return self.cli("PING").strip() == "PONG"
        except subprocess.SubprocessError:
            return False

    def cli(self, *args):
        """One command through redis-cli; its raw output."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        r = subprocess.run(["redis-cli", "-p", str(self.port), *auth, "--raw", *args],
                           capture_output=True, text=True, timeout=20)
        return r.stdout

    def kill(self):
        """SIGKILL: no clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stream(self, key):
        """Every entry of a stream as (entry id, {field: value}), oldest first."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port),
             *(["-a", self.password, "--no-auth-warning"] if self.password else []),
             "--json", "XRANGE", key, "-", "+"], capture_output=True, text=True, timeout=20)
        if not out.stdout.strip():
            return []
        entries = []
        for entry_id, fields in json.loads(out.stdout):
            entries.append((entry_id, dict(zip(fields[0::2], fields[1::2]))))
        return entries

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

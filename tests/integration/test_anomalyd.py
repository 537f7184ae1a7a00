#!/usr/bin/python3
"""The anomalyd binary from the outside: its command line, its admin endpoint, config
reloads on SIGHUP observed through /status and /metrics, and how it stops.

Run by ctest with AD_BUILD_DIR and AD_SOURCE_DIR set. Standard library only.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ANOMALYD, SOURCE, Daemon, wait_for  # noqa: E402

EXAMPLE_SECRETS = {
    "ANOMALYD_KAFKA_PASSWORD": "k",
    "ANOMALYD_PROMETHEUS_TOKEN": "t",
    "ANOMALYD_REDIS_PASSWORD": "r",
    "ANOMALYD_MODEL_STORE_PASSWORD": "m",
    "ANOMALYD_ADMIN_TOKEN": "a",
}


def run(*args, env=None):
    return subprocess.run([ANOMALYD, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


CONFIG = """\
daemon:
  log: {level: info}
  admin: {listen: "127.0.0.1:0"}
  shutdown_timeout: 5s
"""


class CommandLine(unittest.TestCase):
    def test_help_and_version(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: anomalyd", r.stdout)
        self.assertIn("--check-config", r.stdout)
        self.assertIn("Exit status: 0 ok, 1 runtime failure, 2 usage or config error.", r.stdout)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^anomalyd \d+\.\d+\.\d+ \(revision \S+, CUDA backend ")

    def test_usage_errors_exit_2(self):
        for args, message in [(["--bogus"], "unknown option --bogus"),
                              (["--log-level", "loud"], "--log-level"),
                              (["-c"], "-c needs a value")]:
            r = run(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(message, r.stderr)
            self.assertIn("Try 'anomalyd --help'", r.stderr)

    def test_every_example_config_checks(self):
        folder = os.path.join(SOURCE, "config", "examples")
        examples = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
        self.assertGreaterEqual(len(examples), 3)
        for name in examples:
            path = os.path.join(folder, name)
            r = run("--check-config", "-c", path, env=EXAMPLE_SECRETS)
            self.assertEqual(r.returncode, 0, "%s: %s" % (name, r.stderr))
            self.assertRegex(r.stdout, r"^%s: OK \(" % path)

    def test_check_config_prints_every_error(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.yaml")
            with open(path, "w") as f:
                f.write("daemon:\n  log:\n    levle: debug\n  shutdown_timeout: soon\n"
                        "scoring:\n  backend: tpu\n")
            r = run("--check-config", "-c", path)
            self.assertEqual(r.returncode, 2)
            self.assertEqual(r.stdout, "")
            self.assertEqual(r.stderr.splitlines(), [
                path + ':3:5: error: daemon.log.levle: unknown key "levle" '
                '(did you mean "level"?)',
                path + ':4:21: error: daemon.shutdown_timeout: expected a duration such as '
                '30s, 5m or 1h30m; got "soon"',
                path + ':6:12: error: scoring.backend: expected one of auto, cuda, cpu; '
                'got "tpu" (did you mean "cpu"?)',
                path + ": 3 errors; the config is invalid",
            ])

    def test_missing_config_exits_2(self):
        r = run("--check-config", "-c", "/nonexistent/anomalyd.yaml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent/anomalyd.yaml: error: cannot open: No such file", r.stderr)
        r = run("-c", "/nonexistent/anomalyd.yaml", "--log-format", "json")
        self.assertEqual(r.returncode, 2)
        last = json.loads(r.stderr.splitlines()[-1])
        self.assertEqual(last["msg"], "cannot start: the config is invalid")

    def test_busy_port_exits_1(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "a.yaml")
                with open(path, "w") as f:
                    f.write('daemon: {admin: {listen: "127.0.0.1:%d"}}\n' % port)
                r = run("-c", path, "--log-format", "json")
        self.assertEqual(r.returncode, 1)
        last = json.loads(r.stderr.splitlines()[-1])
        self.assertEqual(last["msg"], "cannot start")
        self.assertIn("cannot listen on 127.0.0.1:%d" % port, last["error"])


class AdminEndpoint(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(CONFIG)

    def tearDown(self):
        self.d.close()

    def test_endpoints(self):
        self.assertEqual(self.d.get("/healthz")[0], 200)
        self.assertEqual(self.d.get("/readyz")[0], 200)
        status = self.d.status()
        self.assertEqual(status["state"], "running")
        self.assertRegex(status["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(status["config"]["path"], self.d.config)
        with open(self.d.config, "rb") as f:
            self.assertEqual(status["config"]["sha256"], hashlib.sha256(f.read()).hexdigest())
        self.assertEqual(status["config"]["pending_restart"], [])
        self.assertGreater(status["uptime_seconds"], 0)
        self.assertIn("built_with_cuda", status["gpu"])

        code, headers, body = self.d.get("/metrics")
        self.assertEqual(code, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        for name in ["anomalyd_build_info", "anomalyd_config_reloads_total",
                     "anomalyd_config_last_reload_successful", "anomalyd_gpu_devices",
                     "process_resident_memory_bytes", "process_start_time_seconds",
                     "anomalyd_admin_requests_total"]:
            self.assertIn("# TYPE %s " % name, body)

    def test_metrics_pass_promtool(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool is not installed (scripts/deps installs it)")
        self.d.get("/readyz")
        self.d.get("/nope")
        _, _, body = self.d.get("/metrics")
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout + r.stderr, "")

    def test_bad_requests_get_4xx(self):
        self.assertEqual(self.d.get("/metrics", method="POST")[0], 405)
        self.assertEqual(self.d.get("/nope")[0], 404)
        host, port = self.d.address.rsplit(":", 1)
        for raw in [b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
                    b"\x00\x01\x02\xff\r\n\r\n"]:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                try:
                    s.sendall(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # it may hang up before reading everything
                reply = s.recv(64)
            self.assertRegex(reply, rb"^HTTP/1\.[01] 4\d\d ", raw[:20])
        self.assertEqual(self.d.get("/healthz")[0], 200)

    def test_logs_are_json_lines(self):
        # "anomalyd started" comes after the admin endpoint's line, once the loop runs.
        started = wait_for("the start", lambda: self.d.find("anomalyd started"))
        records = self.d.records()
        self.assertTrue(records)
        for r in records:
            self.assertRegex(r["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(r["level"], ["debug", "info", "warn", "error"])
            self.assertTrue(r["module"])
            self.assertTrue(r["msg"])
        self.assertEqual(started["admin"], self.d.address)


class Reload(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(CONFIG)

    def tearDown(self):
        self.d.close()

    def test_invalid_then_valid_edit(self):
        before = self.d.status()["config"]["sha256"]

        # An invalid edit changes nothing and is counted.
        self.d.write_config(CONFIG + "  shutdown_timout: 1s\n")
        self.d.signal(signal.SIGHUP)
        wait_for("the failed reload",
                 lambda: self.d.metric('anomalyd_config_reloads_total{result="failure"}') == 1)
        self.assertEqual(self.d.metric('anomalyd_config_reloads_total{result="success"}'), 0)
        self.assertEqual(self.d.metric("anomalyd_config_last_reload_successful"), 0)
        status = self.d.status()
        self.assertEqual(status["config"]["sha256"], before)
        self.assertEqual(status["config"]["last_reload"]["result"], "failure")
        self.assertEqual(status["config"]["last_reload"]["errors"], [
            self.d.config + ':5:3: daemon.shutdown_timout: unknown key "shutdown_timout" '
            '(did you mean "shutdown_timeout"?)'])
        error = self.d.find("config error")
        self.assertEqual(error["level"], "error")
        self.assertIn(":5:3:", error["error"])
        self.assertEqual(self.d.get("/readyz")[0], 200)

        self.assertFalse([r for r in self.d.records() if r["level"] == "debug"])

        # A valid edit applies: the log level at once, the new address after a restart.
        text = CONFIG.replace("level: info", "level: debug").replace(
            "127.0.0.1:0", "127.0.0.1:1")
        self.d.write_config(text)
        self.d.signal(signal.SIGHUP)
        wait_for("the successful reload",
                 lambda: self.d.metric('anomalyd_config_reloads_total{result="success"}') == 1)
        status = self.d.status()
        self.assertEqual(status["config"]["sha256"], hashlib.sha256(text.encode()).hexdigest())
        self.assertEqual(status["config"]["last_reload"]["result"], "success")
        self.assertEqual(status["config"]["pending_restart"], ["daemon.admin.listen"])
        self.assertEqual(self.d.metric("anomalyd_config_pending_restart_keys"), 1)
        self.assertEqual(self.d.metric("anomalyd_config_last_reload_successful"), 1)
        warn = self.d.find("setting changed; it takes effect after a restart")
        self.assertEqual(warn["key"], "daemon.admin.listen")
        # Still on the address it started with, and now logging at debug level.
        self.assertEqual(self.d.get("/healthz")[0], 200)
        wait_for("a debug record", lambda: [r for r in self.d.records()
                                            if r["level"] == "debug" and r["msg"] == "request"])


class Stop(unittest.TestCase):
    def test_sigterm_exits_0_within_the_bound(self):
        d = Daemon(CONFIG)
        try:
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            code = d.proc.wait(timeout=30)
            took = time.monotonic() - t0
            d.reader.join(timeout=5)
            self.assertEqual(code, 0)
            # The bound is 5 s; nothing here needs to wait, so it stops well inside it.
            self.assertLess(took, 5.0)
            msgs = [r["msg"] for r in d.records()]
            self.assertIn("stopping", msgs)
            self.assertEqual(msgs[-1], "anomalyd stopped")
        finally:
            d.close()

    def test_sigint_exits_0(self):
        d = Daemon(CONFIG)
        try:
            d.signal(signal.SIGINT)
            self.assertEqual(d.proc.wait(timeout=30), 0)
        finally:
            d.close()


if __name__ == "__main__":
    if not os.access(ANOMALYD, os.X_OK):
        print("anomalyd is not built at", ANOMALYD)
        sys.exit(1)
    unittest.main(verbosity=2)

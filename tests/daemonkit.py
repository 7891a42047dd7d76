"""Helpers for tests that run ``batch-monitor run`` as a subprocess against the simulator.

The daemon follows the simulator's clock (``MONITOR_CLOCK``), so a simulated week passes in
under a minute; every process and server a test starts is stopped by the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.simulator import SimulatorServer
from tests.fakeslack import FakeSlack

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    """Return ``(status, body)`` of a request (HTTP errors included; -1 when unreachable)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return -1, b""


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def write_config(
    path: Path, sim: SimulatorServer, extra: str = "", *, workspaces: bool = True
) -> dict[str, str]:
    """Write a monitor.toml for ``sim``'s workspaces plus ``extra``; return the key env vars."""
    lines: list[str] = []
    env: dict[str, str] = {}
    if workspaces:
        for i, w in enumerate(sim.scenario.workspaces):
            env[f"SIM_KEY_{i}"] = w.api_key
            lines += [
                "[[workspaces]]",
                f'id = "{w.id}"',
                f'name = "{w.name}"',
                f'api_key_env = "SIM_KEY_{i}"',
                f"default = {'true' if w.id == sim.scenario.default_workspace.id else 'false'}",
            ]
    path.write_text(extra.strip() + "\n\n" + "\n".join(lines) + "\n")
    return env


class RunProcess:
    """One ``batch-monitor run`` subprocess, its HTTP port and its log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "MONITOR_")) or k == "MONITOR_TEST_POSTGRES_URL"
        }
        full_env.update(env)
        full_env["MONITOR_METRICS_PORT"] = str(self.port)
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--log-format", "json", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(log_path.parent),
        )

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.proc.pid

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this process's HTTP server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        """Return what the process has logged so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float) -> tuple[int, float]:
        """Send SIGTERM; return ``(exit code, seconds it took)`` (kill and fail after timeout)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            tail = self.log()[-3000:]
            raise AssertionError(f"no exit within {timeout}s of SIGTERM:\n{tail}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the process (a crash) and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Make sure the process is gone and the log file closed (for finally blocks)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def running(env: dict[str, str], log_path: Path, *args: str) -> Iterator[RunProcess]:
    """Run ``batch-monitor run`` for the duration of the block; always stop it."""
    proc = RunProcess(env, log_path, *args)
    try:
        yield proc
    finally:
        proc.stop()


def base_env(
    sim: SimulatorServer, slack: FakeSlack | None, db_url: str, config: Path
) -> dict[str, str]:
    """Return the environment that points a daemon at ``sim``, ``slack`` and ``db_url``."""
    env = {
        "MONITOR_DATABASE_URL": db_url,
        "MONITOR_CONFIG": str(config),
        "ANTHROPIC_BASE_URL": sim.url,
        "ANTHROPIC_ADMIN_KEY": sim.scenario.admin_key,
        "MONITOR_LOG_LEVEL": "INFO",
    }
    if sim.speed:
        env["MONITOR_CLOCK"] = sim.clock_spec()
    if slack is not None:
        env.update(
            {
                "MONITOR_SLACK_BOT_TOKEN": slack.token,
                "MONITOR_SLACK_CHANNEL": "#alerts",
                "MONITOR_SLACK_BASE_URL": slack.base_url,
            }
        )
    return env

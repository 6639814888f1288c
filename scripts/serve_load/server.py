"""A ``python -m kangaroo_dvi.serve`` process on 127.0.0.1 and a free port: start it, wait until /health says ok,
read its health and metrics, stop it (SIGTERM: the drain and the final checkpoint; or SIGKILL). Its output goes to
a log file. Used by the load run and by the serving tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_id: str, state_dir, log_path, flags: list[str], start_s: float = 600,
                 api_key: str = ""):
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}  # the server's --api-key, if any
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        cmd = [sys.executable, "-m", "kangaroo_dvi.serve", "--model-id", str(model_id), "--host", "127.0.0.1",
               "--port", str(self.port), "--state-dir", str(state_dir), *flags]
        self.command = cmd
        self.log = open(self.log_path, "w")  # noqa: SIM115 - open while the process runs; stop() closes it
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.wait_healthy(start_s)

    def wait_healthy(self, start_s: float) -> dict:
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no healthy server after {start_s:.0f}s:\n{self.output()}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()

    def metrics_text(self) -> str:
        return httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text

    def metric(self, name: str) -> float:
        """The value of an unlabelled sample ``name`` in /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and not s.labels:
                    return s.value
        raise KeyError(name)

    def stop(self, sig=signal.SIGTERM, timeout: float = 300) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

"""The control plane as a child process, driven through its command line like an operator would.

Commands run (the CLI contract):
  python -m xds serve --config CATALOG --xds-address 127.0.0.1:P --admin-address 127.0.0.1:Q
                     --management-address 127.0.0.1:M [extra args]
  python -m xds bootstrap --node-id ID --cluster NAME --xds-address 127.0.0.1:P --admin-address 127.0.0.1:Q
The serve process's admin answers `GET /ready` with 200 once it serves, and `GET /metrics` with
Prometheus text.

A restart reuses the same ports, as fault tests need (Envoy reconnects to the address in its bootstrap). A
listening socket is released as soon as its process dies, so rebinding right after `kill -9` works.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.ports import LOOPBACK, free_port
from harness.processes import ManagedProcess, StartStop, wait_until

_ADMIN_TIMEOUT_S = 2.0


class ControlPlaneProcess(StartStop):
    def __init__(
        self,
        config: Path | None,
        *,
        workdir: Path,
        xds_port: int,
        admin_port: int,
        extra_args: Sequence[str] = (),
        name: str = "control-plane",
        management_port: int | None = None,
        env: dict[str, str] | None = None,
        load_report_port: int | None = None,
    ) -> None:
        self.config = config
        self.xds_port = xds_port
        self.admin_port = admin_port
        # The management API has its own listener (issue 9); a free port unless the caller picks one.
        self.management_port = management_port if management_port is not None else free_port()
        # The load report API's own listener (issue 10): a free port too, so processes never collide.
        self.load_report_port = load_report_port if load_report_port is not None else free_port()
        args = [
            sys.executable, "-m", "xds", "serve",
            *(("--config", str(config)) if config is not None else ()),
            "--xds-address", f"{LOOPBACK}:{xds_port}",
            "--admin-address", f"{LOOPBACK}:{admin_port}",
            "--management-address", f"{LOOPBACK}:{self.management_port}",
            "--load-report-address", f"{LOOPBACK}:{self.load_report_port}",
            *extra_args,
        ]
        # Unbuffered output: the log file must show what the server did right up to a kill -9. `env` adds
        # variables such as XDS_MANAGEMENT_TOKEN_FILE (secrets never go on the command line).
        self.process = ManagedProcess(name, args, log_dir=workdir,
                                      env={"PYTHONUNBUFFERED": "1", **(env or {})})

    @property
    def xds_address(self) -> str:
        return f"{LOOPBACK}:{self.xds_port}"

    @property
    def management_address(self) -> str:
        """Where `xds status` reaches this control plane's management API."""
        return f"{LOOPBACK}:{self.management_port}"

    @property
    def alive(self) -> bool:
        return self.process.alive

    def start(self) -> None:
        self.process.start()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until admin `/ready` answers 200; fail at once, with the log tail, if the process exits."""

        def ready() -> bool:
            self.process.check_alive()
            return self.ready()

        wait_until(
            ready,
            timeout_s=timeout_s,
            interval_s=0.1,
            message=lambda: f"control plane not ready; last log lines:\n{self.process.tail()}",
        )

    def ready(self) -> bool:
        try:
            status, _ = self._admin_get("/ready")
        except OSError:
            return False
        return status == 200

    def metrics_text(self) -> str:
        status, body = self._admin_get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics returned {status}: {body[:200]}")
        return body

    def status(self) -> dict[str, Any]:
        """The admin `/status` document (sources, policy error, TLS state, proxies)."""
        code, body = self._admin_get("/status")
        if code != 200:
            raise RuntimeError(f"GET /status returned {code}: {body[:200]}")
        result: dict[str, Any] = json.loads(body)
        return result

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return self.process.stop(timeout_s)

    def kill9(self) -> None:
        """SIGKILL with no chance to clean up (fault test F1), and reap it so the ports are free."""
        self.process.kill(signal.SIGKILL)
        self.process.wait(timeout_s=10.0)

    def restart(self, *, timeout_s: float = 30.0) -> None:
        """Stop if still running, start again on the same ports, and wait until ready."""
        self.process.stop()
        self.process.start()
        self.wait_ready(timeout_s)

    def tail(self, n: int = 40) -> str:
        return self.process.tail(n)

    def _admin_get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(LOOPBACK, self.admin_port, timeout=_ADMIN_TIMEOUT_S)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", errors="replace")
        finally:
            conn.close()


XDS_MODE_ENV = "XDS_E2E_XDS_MODE"
XDS_MODES = ("sotw", "delta")


def xds_mode(mode: str | None = None) -> str:
    """`mode`, or the one XDS_E2E_XDS_MODE names (default "sotw"); ValueError for anything else."""
    chosen = mode if mode is not None else os.environ.get(XDS_MODE_ENV, "sotw")
    if chosen not in XDS_MODES:
        raise ValueError(f"{XDS_MODE_ENV}={chosen!r}: expected one of {', '.join(XDS_MODES)}")
    return chosen


def bootstrap_for(
    node_id: str, cluster: str, *, xds_port: int, admin_port: int, timeout_s: float = 30.0,
    region: str = "", zone: str = "", tls_args: Sequence[str] = (), mode: str | None = None,
) -> str:
    """The Envoy bootstrap YAML the control plane's own CLI generates for this node (in `region`/`zone`
    when given: node.locality; `tls_args`: `--tls-cert F --tls-key F --ca F [--server-san N]`).

    `mode` is the xDS protocol variant, "sotw" or "delta" (`--delta`); None takes it from the environment
    variable XDS_E2E_XDS_MODE (default sotw), so that every e2e test can run in both (issue 11)."""
    args = [
        sys.executable, "-m", "xds", "bootstrap",
        "--node-id", node_id,
        "--cluster", cluster,
        "--xds-address", f"{LOOPBACK}:{xds_port}",
        "--admin-address", f"{LOOPBACK}:{admin_port}",
        *(("--region", region) if region else ()),
        *(("--zone", zone) if zone else ()),
        *tls_args,
        *(("--delta",) if xds_mode(mode) == "delta" else ()),
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(args[1:])}` exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout

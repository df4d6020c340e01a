"""A Consul dev agent with ACLs enforced (default deny), for tests that need a real ACL token (issue 9).

The management token is written to an HCL file in the agent's work directory (mode 0600) rather than passed
as a flag, and this harness's own HTTP calls (registrations, KV writes, readiness probes) send it as
`X-Consul-Token`. The same token is the agent token, so the agent can register its own node.
"""

from __future__ import annotations

import http.client
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path

from harness.consul import ConsulAgent


class AclConsulAgent(ConsulAgent):
    def __init__(self, workdir: Path, *, binary: Path, token: str | None = None, name: str = "consul-acl"
                 ) -> None:
        self.token = token or str(uuid.uuid4())
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / f"{name}-acl.hcl"
        config.write_text(
            "acl {\n  enabled = true\n  default_policy = \"deny\"\n  enable_token_persistence = false\n"
            f"  tokens {{\n    initial_management = \"{self.token}\"\n"
            f"    agent = \"{self.token}\"\n  }}\n}}\n")
        config.chmod(0o600)
        super().__init__(workdir, binary=binary, name=name, extra_args=("-config-file", str(config)))

    def _exchange(self, method: str, path: str, *, body: bytes | None = None,
                  query: Mapping[str, str] | None = None, timeout_s: float | None = None,
                  ) -> tuple[int, dict[str, str], bytes]:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        conn = http.client.HTTPConnection(self.http_host, self.http_port,
                                          timeout=timeout_s or self.request_timeout_s)
        try:
            conn.request(method, target, body=body, headers={"X-Consul-Token": self.token})
            response = conn.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            conn.close()

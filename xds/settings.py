"""Every tunable default in one place, with the environment variable that overrides it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xds.load_settings import LoadSettings
from xds.policy.reader import DEFAULT_MAX_BYTES
from xds.translate.delivery import DEFAULT_XDS_CLUSTER

if TYPE_CHECKING:
    # Only for the annotation: settings stay importable without the Consul client (and aiohttp).
    from xds.server.management_auth import ManagementAuthConfig
    from xds.sources.consul.client import ConsulConfig
    from xds.sources.kubernetes.client import KubeConfig

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:19005"
# The management API's own listener (issue 9): loopback unless a token authenticates callers.
DEFAULT_MANAGEMENT_ADDRESS = "127.0.0.1:18001"

ENV_CONFIG = "XDS_CONFIG"
ENV_XDS_ADDRESS = "XDS_XDS_ADDRESS"
ENV_ADMIN_ADDRESS = "XDS_ADMIN_ADDRESS"
ENV_NODE_GROUP_KEY = "XDS_NODE_GROUP_KEY"
ENV_LOG_LEVEL = "XDS_LOG_LEVEL"
ENV_LOG_FORMAT = "XDS_LOG_FORMAT"
# The workload CA (issue 9; docs/security.md "Workload certificates"): file paths, and the lifetime.
ENV_CA_CERT = "XDS_CA_CERT"
ENV_CA_KEY = "XDS_CA_KEY"
ENV_WORKLOAD_CERT_TTL = "XDS_WORKLOAD_CERT_TTL"
ENV_XDS_CLUSTER_NAME = "XDS_XDS_CLUSTER_NAME"
ENV_ENVOY_STATS_PORT = "XDS_ENVOY_STATS_PORT"
ENV_ENVOY_STATS_ADDRESS = "XDS_ENVOY_STATS_ADDRESS"
DEFAULT_WORKLOAD_CERT_TTL_S = 3600.0

# The management API (docs/security.md, "The management API and secrets"). Tokens come from files or the
# environment only: a command-line value is visible to every local user in `ps`.
ENV_MANAGEMENT_ADDRESS = "XDS_MANAGEMENT_ADDRESS"
ENV_MANAGEMENT_TOKEN_FILE = "XDS_MANAGEMENT_TOKEN_FILE"  # read-only role; `xds status` reads it too
ENV_MANAGEMENT_ADMIN_TOKEN_FILE = "XDS_MANAGEMENT_ADMIN_TOKEN_FILE"  # admin role
ENV_MANAGEMENT_TOKEN = "XDS_MANAGEMENT_TOKEN"  # a read-only token's value
ENV_MANAGEMENT_ADMIN_TOKEN = "XDS_MANAGEMENT_ADMIN_TOKEN"  # an admin token's value

# Limits (docs/operations.md, "Limits"): what one client, or the set of all clients, may make the server
# hold. The per-request bounds (node, names, rate) live with StreamLimits in xds/server/limits.py.
ENV_MAX_NODE_GROUPS = "XDS_MAX_NODE_GROUPS"
ENV_NODE_GROUP_GRACE_S = "XDS_NODE_GROUP_GRACE_S"
ENV_MAX_STREAMS = "XDS_MAX_STREAMS"
ENV_GRPC_REFLECTION = "XDS_GRPC_REFLECTION"
ENV_MAX_REQUEST_BYTES = "XDS_MAX_REQUEST_BYTES"
ENV_MAX_CATALOG_BYTES = "XDS_MAX_CATALOG_BYTES"
DEFAULT_MAX_NODE_GROUPS = 1000
DEFAULT_NODE_GROUP_GRACE_S = 60.0
DEFAULT_MAX_STREAMS = 10_000
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CATALOG_BYTES = DEFAULT_MAX_BYTES  # declared with the reader that enforces it
# Connect storms and stuck clients (issue 12; docs/operations.md "Connect storms"; server/admission.py,
# server/writes.py). 0 turns a bound off. 5000 initial syncs at once: the largest storm measured to sync
# completely on one core, so a normal storm is never refused; the rate is off unless an operator sets it.
ENV_MAX_STREAM_STARTS_PER_S = "XDS_MAX_STREAM_STARTS_PER_S"
ENV_MAX_INITIAL_SYNCS = "XDS_MAX_INITIAL_SYNCS"
ENV_WRITE_TIMEOUT_S = "XDS_WRITE_TIMEOUT_S"
DEFAULT_MAX_STREAM_STARTS_PER_S = 0.0
DEFAULT_MAX_INITIAL_SYNCS = 5000
DEFAULT_WRITE_TIMEOUT_S = 60.0

# Consul source (docs/consul.md). Without an address there is no Consul source. Its tunables' defaults
# (wait, token bucket, resync grace) live with ConsulConfig in xds/sources/consul/client.py.
ENV_CONSUL_ADDRESS = "XDS_CONSUL_ADDRESS"
ENV_CONSUL_TOKEN = "XDS_CONSUL_TOKEN"
ENV_CONSUL_HTTP_TOKEN = "CONSUL_HTTP_TOKEN"  # Consul's own CLI variable, honoured when ours is unset
ENV_CONSUL_TOKEN_FILE = "XDS_CONSUL_TOKEN_FILE"
ENV_CONSUL_HTTP_TOKEN_FILE = "CONSUL_HTTP_TOKEN_FILE"  # Consul's own CLI variable, as above
ENV_CONSUL_DATACENTER = "XDS_CONSUL_DATACENTER"  # comma-separated; the first is the local one
ENV_CONSUL_CONSISTENCY = "XDS_CONSUL_CONSISTENCY"
ENV_CONSUL_CA_FILE = "XDS_CONSUL_CA_FILE"
ENV_CONSUL_CERT_FILE = "XDS_CONSUL_CERT_FILE"
ENV_CONSUL_KEY_FILE = "XDS_CONSUL_KEY_FILE"
ENV_CONSUL_TLS_SERVER_NAME = "XDS_CONSUL_TLS_SERVER_NAME"
ENV_CONSUL_KV_PREFIX = "XDS_CONSUL_KV_PREFIX"
ENV_CONSUL_WARNING_AS = "XDS_CONSUL_WARNING_AS"
ENV_CONSUL_INCLUDE_CONNECT = "XDS_CONSUL_INCLUDE_CONNECT"
ENV_CONSUL_RESYNC_GRACE_S = "XDS_CONSUL_RESYNC_GRACE_S"

# Kubernetes source (docs/kubernetes.md). Without --kube, --kubeconfig or --kube-in-cluster (or their
# variables) there is no Kubernetes source. Its tunables' defaults (watch and inactivity timeouts, resync
# grace) live with KubeConfig in xds/sources/kubernetes/client.py.
ENV_KUBE = "XDS_KUBE"  # true: watch the cluster of the default kubeconfig ($KUBECONFIG, ~/.kube/config)
ENV_KUBECONFIG = "XDS_KUBECONFIG"
ENV_KUBE_IN_CLUSTER = "XDS_KUBE_IN_CLUSTER"
ENV_KUBE_CONTEXT = "XDS_KUBE_CONTEXT"
ENV_KUBE_NAMESPACE = "XDS_KUBE_NAMESPACE"  # comma-separated; unset: all namespaces
ENV_KUBE_LABEL_SELECTOR = "XDS_KUBE_LABEL_SELECTOR"
ENV_KUBE_POLICY_NAMESPACE = "XDS_KUBE_POLICY_NAMESPACE"  # comma-separated; unset: all namespaces
ENV_KUBE_POLICIES = "XDS_KUBE_POLICIES"  # false: do not watch TrafficPolicy objects
ENV_KUBE_RESYNC_GRACE_S = "XDS_KUBE_RESYNC_GRACE_S"

# Security (issue 9; docs/security.md). The trust domain is the one of every SPIFFE id the server reads or
# issues. mTLS on the xDS port needs all three files (paths, re-read when they change).
ENV_TRUST_DOMAIN = "XDS_TRUST_DOMAIN"
DEFAULT_TRUST_DOMAIN = "xds.local"
ENV_TLS_CERT = "XDS_TLS_CERT"
ENV_TLS_KEY = "XDS_TLS_KEY"
ENV_CLIENT_CA = "XDS_CLIENT_CA"
ENV_IDENTITY_RULE = "XDS_IDENTITY_RULE"
ENV_TLS_RELOAD_INTERVAL_S = "XDS_TLS_RELOAD_INTERVAL_S"
DEFAULT_IDENTITY_RULE = "spiffe"
DEFAULT_TLS_RELOAD_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    config_files: tuple[Path, ...] = ()
    xds_address: str = DEFAULT_XDS_ADDRESS
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    management_address: str = DEFAULT_MANAGEMENT_ADDRESS
    # Bearer tokens of the management API; None or an empty config: no authentication, loopback only.
    management_auth: ManagementAuthConfig | None = None
    node_group_key: str = "cluster"
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"
    # Coalesce bursts of source changes into one snapshot build (docs/protocol.md R37; Istio uses 100 ms).
    debounce_s: float = 0.05
    file_poll_interval_s: float = 0.2
    # Node groups held at once (live or idle), and how long an idle group's snapshot is kept after its
    # last stream closed (a reconnect within the grace finds it built).
    max_node_groups: int = DEFAULT_MAX_NODE_GROUPS
    node_group_grace_s: float = DEFAULT_NODE_GROUP_GRACE_S
    max_streams: int = DEFAULT_MAX_STREAMS
    max_stream_starts_per_s: float = DEFAULT_MAX_STREAM_STARTS_PER_S
    max_initial_syncs: int = DEFAULT_MAX_INITIAL_SYNCS
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    # gRPC server reflection on the xDS port (issue 11 item 3; docs/operations.md).
    grpc_reflection: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_catalog_bytes: int = DEFAULT_MAX_CATALOG_BYTES
    # The Consul source, when configured; merged after the file sources (docs/consul.md).
    consul: ConsulConfig | None = None
    # The Kubernetes source, when configured; merged after Consul (docs/kubernetes.md).
    kubernetes: KubeConfig | None = None
    # Every registry source's config by kind name (xds/source_kinds.py; issue 13). `consul` and
    # `kubernetes` above remain as shorthands for their kinds; an entry here wins over them.
    registries: Mapping[str, Any] = field(default_factory=dict)
    # Issue 9 (docs/security.md). With tls_cert, tls_key and client_ca the xDS port is mTLS-only and every
    # stream's node is bound to its client certificate by `identity_rule`; without them it is plaintext.
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    identity_rule: str = DEFAULT_IDENTITY_RULE
    tls_reload_interval_s: float = DEFAULT_TLS_RELOAD_INTERVAL_S
    extra: Mapping[str, str] = field(default_factory=dict)
    # The workload CA (xds/workload_ca.py): both files or neither (a development CA in memory).
    ca_cert: Path | None = None
    ca_key: Path | None = None
    workload_cert_ttl_s: float = DEFAULT_WORKLOAD_CERT_TTL_S
    # Load-aware weights (issue 10; flags and XDS_LOAD_* variables in xds/cli_load.py).
    load: LoadSettings = field(default_factory=LoadSettings)
    # The bootstrap cluster single-type Envoys reach this server by (issue 11; translate/delivery.py).
    xds_cluster_name: str = DEFAULT_XDS_CLUSTER
    # The Envoys' Prometheus stats listener (issue 14; translate/stats_listener.py): 0 = off.
    envoy_stats_port: int = 0
    envoy_stats_address: str = "0.0.0.0"

    def registry_config(self, kind: str) -> Any:
        """The config of registry kind `kind` (a row of xds/source_kinds.py), None when not configured."""
        if kind in self.registries:
            return self.registries[kind]
        return {"consul": self.consul, "kubernetes": self.kubernetes}.get(kind)


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings given through XDS_* environment variables, by CLI flag name."""
    env = os.environ if env is None else env
    names = {ENV_CONFIG: "config", ENV_XDS_ADDRESS: "xds_address", ENV_ADMIN_ADDRESS: "admin_address",
             ENV_MANAGEMENT_ADDRESS: "management_address", ENV_MANAGEMENT_TOKEN_FILE: "management_token_file",
             ENV_MANAGEMENT_ADMIN_TOKEN_FILE: "management_admin_token_file",
             ENV_NODE_GROUP_KEY: "node_group_key", ENV_LOG_LEVEL: "log_level", ENV_LOG_FORMAT: "log_format",
             ENV_MAX_NODE_GROUPS: "max_node_groups", ENV_NODE_GROUP_GRACE_S: "node_group_grace",
             ENV_MAX_STREAMS: "max_streams", ENV_MAX_REQUEST_BYTES: "max_request_bytes",
             ENV_GRPC_REFLECTION: "grpc_reflection",
             ENV_MAX_STREAM_STARTS_PER_S: "max_stream_starts_per_second",
             ENV_MAX_INITIAL_SYNCS: "max_initial_syncs", ENV_WRITE_TIMEOUT_S: "write_timeout",
             ENV_MAX_CATALOG_BYTES: "max_catalog_bytes",
             ENV_TRUST_DOMAIN: "trust_domain", ENV_TLS_CERT: "tls_cert", ENV_TLS_KEY: "tls_key",
             ENV_CLIENT_CA: "client_ca", ENV_IDENTITY_RULE: "identity_rule",
             ENV_TLS_RELOAD_INTERVAL_S: "tls_reload_interval",
             ENV_CA_CERT: "ca_cert", ENV_CA_KEY: "ca_key", ENV_WORKLOAD_CERT_TTL: "workload_cert_ttl",
             ENV_XDS_CLUSTER_NAME: "xds_cluster_name",
             ENV_ENVOY_STATS_PORT: "envoy_stats_port", ENV_ENVOY_STATS_ADDRESS: "envoy_stats_address"}
    found = {flag: env[var] for var, flag in names.items() if env.get(var)}
    # Each registry kind reads its own variables (issue 13); imported here, not at the top, because the
    # kinds' flag modules import this one.
    from xds.source_kinds import KINDS

    for kind in KINDS:
        found.update(kind.from_environment(env))
    for var, name in ((ENV_MANAGEMENT_TOKEN, "management_token"),
                      (ENV_MANAGEMENT_ADMIN_TOKEN, "management_admin_token")):
        if env.get(var):
            found[name] = env[var]
    return found


def parse_flag(value: str) -> bool:
    """An on/off environment value: 1/true/yes/on or 0/false/no/off (any case)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, number


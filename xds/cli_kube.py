"""The Kubernetes row of the source kinds (xds/source_kinds.py): `xds serve`'s --kube* flags, their
XDS_KUBE* variables, and the KubeConfig they make (docs/kubernetes.md). Imports no Kubernetes client."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from xds import settings as defaults
from xds.cli_source_args import env_list, environment_flags, switch

if TYPE_CHECKING:
    from xds.sources.base import Source
    from xds.sources.kubernetes.client import KubeConfig

# Environment variable -> flag name (settings.from_environment merges these).
_ENVIRONMENT = {
    defaults.ENV_KUBE: "kube", defaults.ENV_KUBECONFIG: "kubeconfig",
    defaults.ENV_KUBE_IN_CLUSTER: "kube_in_cluster",
    defaults.ENV_KUBE_CONTEXT: "kube_context", defaults.ENV_KUBE_NAMESPACE: "kube_namespace",
    defaults.ENV_KUBE_LABEL_SELECTOR: "kube_label_selector",
    defaults.ENV_KUBE_POLICY_NAMESPACE: "kube_policy_namespace",
    defaults.ENV_KUBE_POLICIES: "kube_policies", defaults.ENV_KUBE_RESYNC_GRACE_S: "kube_resync_grace",
}
HINT = "a Kubernetes cluster with --kube, --kubeconfig PATH or --kube-in-cluster"


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The Kubernetes settings given through the environment, by flag name."""
    return environment_flags(env, _ENVIRONMENT)


def source(config: KubeConfig) -> Source:
    from xds.sources.kubernetes import KubernetesSource

    return KubernetesSource(config)


def secrets(config: KubeConfig) -> tuple[str | None, ...]:
    return ()  # credentials stay in the kubeconfig / service account files, never in the config


def add_arguments(serve: argparse.ArgumentParser, env: dict[str, str]) -> None:
    kube = serve.add_argument_group("Kubernetes source (docs/kubernetes.md)")
    kube.add_argument("--kube", action="store_true", default=None,
                      help="watch the cluster of the default kubeconfig ($KUBECONFIG, else ~/.kube/config) "
                           f"(env {defaults.ENV_KUBE}=true)")
    kube.add_argument("--kubeconfig", default=env.get("kubeconfig"), metavar="PATH",
                      help=f"watch the cluster of this kubeconfig (env {defaults.ENV_KUBECONFIG})")
    kube.add_argument("--kube-in-cluster", action="store_true", default=None,
                      help="watch the cluster this pod runs in, with its service account "
                           f"(env {defaults.ENV_KUBE_IN_CLUSTER}=true)")
    kube.add_argument("--kube-context", default=env.get("kube_context"), metavar="NAME",
                      help="kubeconfig context; default its current-context "
                           f"(env {defaults.ENV_KUBE_CONTEXT})")
    kube.add_argument("--kube-namespace", action="append", metavar="NAMESPACE",
                      help="watch Services and EndpointSlices in this namespace (repeatable); default all "
                           f"(env {defaults.ENV_KUBE_NAMESPACE}, comma-separated)")
    kube.add_argument("--kube-label-selector", default=env.get("kube_label_selector", ""), metavar="SELECTOR",
                      help="only Services matching this label selector, e.g. 'mesh=xds' "
                           f"(env {defaults.ENV_KUBE_LABEL_SELECTOR})")
    kube.add_argument("--kube-policy-namespace", action="append", metavar="NAMESPACE",
                      help="read TrafficPolicy objects in this namespace (repeatable); default all "
                           f"(env {defaults.ENV_KUBE_POLICY_NAMESPACE}, comma-separated)")
    kube.add_argument("--no-kube-policies", dest="kube_policies", action="store_false", default=None,
                      help="do not read TrafficPolicy objects (no CRD needed) "
                           f"(env {defaults.ENV_KUBE_POLICIES}=false)")
    kube.add_argument("--kube-resync-grace", type=float, default=env.get("kube_resync_grace"),
                      metavar="SECONDS",
                      help="after an API server outage, hold removals this long (default 30; "
                           f"env {defaults.ENV_KUBE_RESYNC_GRACE_S})")


def config(args: argparse.Namespace, env: dict[str, str]) -> KubeConfig | None:
    """The Kubernetes source's configuration, or None when it is not asked for. Reads the kubeconfig to name
    the source after its API server. SystemExit on a bad value."""
    try:
        enabled = switch(args.kube, env, "kube")
        in_cluster = switch(args.kube_in_cluster, env, "kube_in_cluster")
        policies = switch(args.kube_policies, env, "kube_policies", default="true")
    except ValueError as exc:
        raise SystemExit(f"xds: error: Kubernetes: {exc}") from exc
    if not (enabled or in_cluster or args.kubeconfig):
        return None
    from xds.sources.kubernetes.client import KubeConfig, KubeConfigError, resolve_server

    namespaces = tuple(args.kube_namespace or env_list(env.get("kube_namespace", "")))
    policy_namespaces = tuple(args.kube_policy_namespace or env_list(env.get("kube_policy_namespace", "")))
    try:
        config = KubeConfig(args.kubeconfig or None, in_cluster=in_cluster, context=args.kube_context or None,
                            namespaces=namespaces, label_selector=args.kube_label_selector,
                            policies=policies, policy_namespaces=policy_namespaces)
        if args.kube_resync_grace is not None:
            config = dataclasses.replace(config, resync_grace_s=float(args.kube_resync_grace))
        return dataclasses.replace(config, server=resolve_server(config))
    except (ValueError, KubeConfigError) as exc:
        raise SystemExit(f"xds: error: Kubernetes: {exc}") from exc

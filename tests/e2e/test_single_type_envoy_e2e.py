"""An Envoy bootstrapped with per-type gRPC config sources (no ADS) gets a working config (issue 11 item 3):
the server names the same per-type source for EDS and RDS, so the Envoy accepts every cluster and listener
and carries traffic through an edit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import UpstreamPool, free_port, run_requests, wait_until
from harness.envoy import AdminError
from harness.xds_clients import bootstrap_text

from .stack import Catalog, Stack, assert_clean

V1 = {"version": "v1"}
V2 = {"version": "v2"}


def test_single_type_envoy_serves_traffic_and_follows_an_edit(
        workdir: Path, upstreams: Callable[..., UpstreamPool], control_plane_factory: Any,
        envoy_factory: Any) -> None:
    pool = upstreams("web-v1", "web-v2")
    catalog = Catalog(path=workdir / "catalog.yaml", listener_port=free_port(), pool=pool,
                      services={"web": [("web-v1", V1), ("web-v2", V2)]},
                      backends=[("web", V1, 80), ("web", V2, 20)])
    catalog.write()
    control_plane = control_plane_factory(
        catalog.path, extra_args=("--log-level", os.environ.get("XDS_E2E_LOG_LEVEL", "INFO")))
    envoy = envoy_factory(lambda admin_port: bootstrap_text(
        "envoy-single", "edge", xds_port=control_plane.xds_port, mode="--no-ads", admin_port=admin_port))
    stack = Stack(catalog=catalog, control_plane=control_plane, envoy=envoy)
    wait_until(lambda: envoy.listener_port("ingress") == catalog.listener_port, timeout_s=15,
               message="the single-type Envoy never bound the ingress listener",
               ignore=(KeyError, AdminError))

    result = run_requests(stack.url, count=1000, concurrency=8)
    assert result.non_2xx == 0 and result.failures == 0, result.summary()
    # 1000 weighted picks: one standard deviation is 1.3 points, +-5 points is a 3.9-sigma band.
    assert 0.75 <= result.share("web-v1") <= 0.85, result.summary()

    # Every stream is a single-type one: no ADS, and each of CDS, EDS, LDS and RDS has its own.
    # Every stream is single-type: the node group has only its single-type variant, and the Envoy holds one
    # stream per type (CDS, LDS, RDS) plus EDS.
    status = control_plane.status()
    assert set(status["groups"]) == {"edge|client=envoy-single"}, status["groups"]
    assert len(status["proxies"]) >= 4, status["proxies"]

    catalog.backends = [("web", V1, 50), ("web", V2, 50)]
    catalog.write()
    stack.wait_weights({"web|version=v1": 50, "web|version=v2": 50}, timeout_s=10)
    after = run_requests(stack.url, count=1000, concurrency=8)
    assert after.non_2xx == 0 and after.failures == 0, after.summary()
    assert 0.45 <= after.share("web-v1") <= 0.55, after.summary()

    # A changed cluster (a new lb_policy) on the CDS stream needs its endpoints again on an EDS stream that
    # knows nothing of CDS (docs/protocol.md R21): it must finish warming well before Envoy's 15 s
    # initial_fetch_timeout, and serve.
    catalog.service_settings = {"web": {"lb_policy": "least_request"}}
    written = catalog.write()
    wait_until(lambda: _lb_policies(stack) == {"LEAST_REQUEST"}, timeout_s=10,
               message=lambda: f"Envoy's clusters still use {_lb_policies(stack)}")
    wait_until(lambda: envoy.stat("cluster_manager.warming_clusters") == 0, timeout_s=10,
               message="a changed cluster stayed warming")
    warmed_s = time.monotonic() - written
    print(f"single-type cluster change applied and warmed in {warmed_s:.2f} s")
    assert warmed_s < 5.0
    final = run_requests(stack.url, count=200, concurrency=4)
    assert final.non_2xx == 0 and final.failures == 0, final.summary()
    assert_clean(stack)


def _lb_policies(stack: Stack) -> set[str]:
    dump = stack.envoy.admin_json("/config_dump?resource=dynamic_active_clusters")
    return {entry["cluster"].get("lb_policy", "ROUND_ROBIN") for entry in dump.get("configs", [])}

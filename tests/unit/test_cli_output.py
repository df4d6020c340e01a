"""The `-o json|yaml` shapes of `xds status` (xds/cli_output.py, issue 14 item 5; docs/operations.md
"CLI output formats")."""

from __future__ import annotations

import json

import yaml

from xds import typeurls
from xds.cli_output import dump, loads_to_dict, proxies_to_dict, snapshot_to_dict
from xds.management.v1 import management_pb2 as pb


def _response() -> pb.ListProxiesResponse:
    synced = pb.TypeStatus(type_url=typeurls.CLUSTER, short_name="cds", version_sent="v1", nonce_sent="1",
                           version_acked="v1", pushes=1)
    nacked = pb.TypeStatus(type_url=typeurls.LISTENER, short_name="lds", version_sent="v2", nonce_sent="2",
                           version_acked="v1", last_nack_version="v2", last_nack_nonce="2", nack_count=1,
                           last_nack_message="bind: Address already in use")
    return pb.ListProxiesResponse(
        proxies=[pb.Proxy(stream_id=7, node_id="envoy-1", group="edge", method="ads",
                          types=[synced, nacked])],
        sources=[pb.SourceStatus(name="file:c.yaml", synced=True)])


def test_status_json_has_proto_names_and_the_table_state() -> None:
    data = proxies_to_dict(_response())
    assert set(data) == {"proxies", "sources", "quarantined"}
    proxy = data["proxies"][0]
    assert (proxy["node_id"], proxy["group"], proxy["stream_id"]) == ("envoy-1", "edge", "7")
    states = [(t["short_name"], t["state"]) for t in proxy["types"]]
    assert states == [("cds", "SYNCED"), ("lds", "NACKED(v2)")]
    assert proxy["types"][1]["last_nack_message"] == "bind: Address already in use"
    assert data["sources"] == [{"name": "file:c.yaml", "synced": True}]
    assert data["quarantined"] == []
    assert json.loads(dump(data, "json")) == data
    assert yaml.safe_load(dump(data, "yaml")) == data


def test_empty_status_keeps_every_key() -> None:
    assert proxies_to_dict(pb.ListProxiesResponse()) == {"proxies": [], "sources": [], "quarantined": []}
    assert loads_to_dict(pb.ListLoadsResponse()) == []


def test_snapshot_resources_are_parsed() -> None:
    resp = pb.GetSnapshotResponse(
        group="edge", versions=[pb.TypeVersion(type_url=typeurls.CLUSTER, version="abc")],
        resources=[pb.SnapshotResource(type_url=typeurls.CLUSTER, name="web", version="h1",
                                       json='{"name":"web"}')])
    assert snapshot_to_dict(resp) == {
        "group": "edge", "error": "",
        "versions": [{"type": "cds", "type_url": typeurls.CLUSTER, "version": "abc"}],
        "resources": [{"type_url": typeurls.CLUSTER, "name": "web", "version": "h1",
                       "resource": {"name": "web"}}]}

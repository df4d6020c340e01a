"""`mtls`, `authorization` and `inbound_for` (issue 9, items 5 and 6): loading, located errors, what
apply_policy and translate make of them, and the workload secrets the pipeline adds."""

from __future__ import annotations

import textwrap

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.unit.service_settings import loaded_service, service_problems
from xds.pipeline import NoWorkloadCaError, World, build_snapshot
from xds.pki.ca import generate_ca
from xds.pki.workload import WorkloadIdentities
from xds.policy.apply import apply_policy
from xds.policy.desired import TRUST_BUNDLE_SECRET, WORKLOAD_CERT_SECRET, MtlsMode
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.translate.clusters import build_cluster
from xds.translate.listeners import build_listener
from xds.typeurls import CLUSTER, LISTENER, SECRET

MESH = textwrap.dedent("""\
    services:
      - name: b
        mtls: {mode}
        authorization:
          - identities: [a, "spiffe://other.domain/ns/ops"]
          - identities: [c]
            prefix: /read
            methods: [GET, HEAD]
        endpoints: [{{address: "127.0.0.1:9001"}}]
      - name: b-app
        endpoints: [{{address: "127.0.0.1:9002"}}]
    listeners:
      - name: a-out
        port: 9000
        groups: [a]
        routes: [{{backends: [{{service: b}}]}}]
      - name: b-in
        port: 9001
        inbound_for: b
        routes: [{{backends: [{{service: b-app}}]}}]
    """)


def world(mode: str = "strict", **extra: object) -> World:
    catalog, policy = parse_document(MESH.format(mode=mode), where="mesh.yaml")
    return World(catalog=catalog, policy=policy, **extra)  # type: ignore[arg-type]


def test_defaults_are_off_and_allow_all() -> None:
    service = loaded_service("lb_policy: round_robin")
    assert service.mtls is MtlsMode.OFF and service.authorization == ()


def test_mesh_settings_load() -> None:
    service = loaded_service("""
        mtls: permissive
        authorization:
          - {identities: [frontend], prefix: /api, methods: [GET]}
    """)
    assert service.mtls is MtlsMode.PERMISSIVE
    [rule] = service.authorization
    assert (rule.identities, rule.prefix, rule.methods) == (("frontend",), "/api", ("GET",))


@pytest.mark.parametrize(("settings", "expected"), [
    ("mtls: on", "c.yaml:3:11: services[0].mtls: must be a string, got boolean true"),
    # YAML 1.1 reads unquoted off as false: the message says to quote it, as the schemas expect a string.
    ("mtls: off", "c.yaml:3:11: services[0].mtls: must be a string, got boolean false; quote it"),
    ("mtls: lax", "c.yaml:3:11: services[0].mtls: must be one of"),
    ("authorization: [{identities: [a]}]",
     "c.yaml:3:20: services[0].authorization: needs `mtls: strict` or `mtls: permissive`"),
    ("mtls: strict\nauthorization: []",
     "c.yaml:4:20: services[0].authorization: must list at least one rule"),
    ("mtls: strict\nauthorization: [{prefix: /x}]",
     "c.yaml:4:21: services[0].authorization[0]: missing required key 'identities'"),
    ("mtls: strict\nauthorization: [{identities: [\"a b\"]}]",
     "c.yaml:4:35: services[0].authorization[0].identities[0]: must be a SPIFFE ID"),
    ("mtls: strict\nauthorization: [{identities: [a], methods: [FETCH]}]",
     "c.yaml:4:49: services[0].authorization[0].methods[0]: must be one of GET, HEAD"),
    ("mtls: strict\nauthorization: [{identities: [a], prefix: api}]",
     "c.yaml:4:47: services[0].authorization[0].prefix: must start with '/'"),
])
def test_located_errors(settings: str, expected: str) -> None:
    problems = service_problems(settings)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_service_name_that_cannot_be_an_identity_cannot_have_mtls() -> None:
    with pytest.raises(PolicyError, match=r"c.yaml:3:11: .*cannot have mTLS"):
        parse_document("services:\n  - name: web.shop:80\n    mtls: strict\n", where="c.yaml")


@pytest.mark.parametrize(("listener", "expected"), [
    ("inbound_for: nope", "unknown service 'nope'"),
    ("inbound_for: b\n    groups: [a]", "is served to node group 'b' only"),
])
def test_inbound_for_errors(listener: str, expected: str) -> None:
    text = ("services: [{name: b, endpoints: []}]\nlisteners:\n  - name: in\n    port: 9001\n"
            f"    {listener}\n    routes: [{{backends: [{{service: b}}]}}]\n")
    with pytest.raises(PolicyError, match=expected):
        parse_document(text, where="c.yaml")


def test_inbound_listener_goes_to_its_service_group_only() -> None:
    w = world()
    names = {g: [x.name for x in apply_policy(w.catalog, w.policy, group=g).listeners] for g in "abc"}
    assert names == {"a": ["a-out"], "b": ["b-in"], "c": []}


def test_clients_originate_mtls_checking_the_service_identity() -> None:
    w = world()
    desired = apply_policy(w.catalog, w.policy, group="a", trust_domain="corp.example")
    [cluster] = desired.clusters
    assert cluster.mesh_tls is not None and cluster.mesh_tls.peer_identity == "spiffe://corp.example/group/b"
    built = build_cluster(cluster)
    context = tls_pb2.UpstreamTlsContext()
    built.transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == [WORKLOAD_CERT_SECRET]
    assert common.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == TRUST_BUNDLE_SECRET
    [san] = combined.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.URI, "spiffe://corp.example/group/b")


def test_mtls_off_keeps_clusters_plaintext() -> None:
    catalog, policy = parse_document("services: [{name: b, mtls: 'off', endpoints: []}]\nlisteners: [{name: "
                                     "l, port: 1, routes: [{backends: [{service: b}]}]}]\n", where="x")
    [cluster] = apply_policy(catalog, policy, group="a").clusters
    assert cluster.mesh_tls is None and not build_cluster(cluster).HasField("transport_socket")


def _hcm(listener_proto: object, chain: int = 0) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    listener_proto.filter_chains[chain].filters[0].typed_config.Unpack(manager)  # type: ignore[attr-defined]
    return manager


def test_strict_inbound_listener_requires_client_certificates_and_authorizes() -> None:
    w = world()
    [listener] = apply_policy(w.catalog, w.policy, group="b").listeners
    built = build_listener(listener)
    [chain] = built.filter_chains
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value is True
    assert (context.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name
            == TRUST_BUNDLE_SECRET)
    manager = _hcm(built)
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    rbac = rbac_filter_pb2.RBAC()
    manager.http_filters[0].typed_config.Unpack(rbac)
    assert rbac.rules.action == rbac_pb2.RBAC.ALLOW
    first, second = rbac.rules.policies["rule-0"], rbac.rules.policies["rule-1"]
    ids = [p.authenticated.principal_name.exact for p in first.principals[0].or_ids.ids]
    assert ids == ["spiffe://xds.local/group/a", "spiffe://other.domain/ns/ops"]
    assert first.permissions[0].any
    assert second.principals[0].authenticated.principal_name.exact == "spiffe://xds.local/group/c"
    narrowed = second.permissions[0].and_rules.rules
    assert narrowed[0].url_path.path.prefix == "/read"
    assert [r.header.string_match.exact for r in narrowed[1].or_rules.rules] == ["GET", "HEAD"]
    assert "%DOWNSTREAM_PEER_URI_SAN%" in str(manager.access_log[0])


def test_permissive_inbound_listener_has_a_tls_and_a_plaintext_chain() -> None:
    w = world("permissive")
    [listener] = apply_policy(w.catalog, w.policy, group="b").listeners
    built = build_listener(listener)
    assert [f.name for f in built.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert [c.filter_chain_match.transport_protocol for c in built.filter_chains] == ["tls", "raw_buffer"]
    assert built.filter_chains[0].HasField("transport_socket")
    assert not built.filter_chains[1].HasField("transport_socket")


def test_snapshots_carry_the_groups_own_workload_certificate() -> None:
    identities = WorkloadIdentities(generate_ca("xds.local"))
    w = world(workload=identities)
    a, b = build_snapshot(w, "a"), build_snapshot(w, "b")
    expected = [TRUST_BUNDLE_SECRET, WORKLOAD_CERT_SECRET]
    assert sorted(a.of_type(SECRET)) == sorted(b.of_type(SECRET)) == expected
    assert a.get(SECRET, WORKLOAD_CERT_SECRET) != b.get(SECRET, WORKLOAD_CERT_SECRET)
    assert b"spiffe://xds.local/group/a" in _cert_der_text(a)
    assert (CLUSTER in a.versions) and (LISTENER in b.versions)
    # A rebuild reuses the certificate until it is due: same SDS version.
    assert build_snapshot(w, "a", a).version(SECRET) == a.version(SECRET)
    identities.release_due()  # nothing due yet
    assert build_snapshot(w, "a", a).version(SECRET) == a.version(SECRET)


def test_a_group_without_mesh_settings_gets_no_secrets_and_no_ca_is_needed() -> None:
    w = world()
    assert build_snapshot(w, "c").of_type(SECRET) == {}
    with pytest.raises(NoWorkloadCaError, match="node group 'a' needs a workload certificate"):
        build_snapshot(w, "a")


def _cert_der_text(snapshot: object) -> bytes:
    from cryptography import x509
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    resource = snapshot.get(SECRET, WORKLOAD_CERT_SECRET)  # type: ignore[attr-defined]
    secret = secret_pb2.Secret.FromString(resource.body)
    cert = x509.load_pem_x509_certificate(secret.tls_certificate.certificate_chain.inline_bytes)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return " ".join(san.get_values_for_type(x509.UniformResourceIdentifier)).encode()


def test_mtls_and_upstream_tls_on_one_service_are_refused() -> None:
    problems = service_problems("tls: {ca_file: /etc/ca.pem}\nmtls: strict")
    assert len(problems) == 1 and problems[0].startswith(
        "c.yaml:4:11: services[0].mtls: cannot be combined with `tls`"), problems


def test_an_inbound_listener_with_ingress_tls_is_refused() -> None:
    text = ("services: [{name: b, mtls: strict, endpoints: []}]\nlisteners:\n  - name: in\n    port: 9001\n"
            "    tls: {certificates: [{cert_file: /c.pem, key_file: /k.pem}]}\n    inbound_for: b\n"
            "    routes: [{backends: [{service: b}]}]\n")
    with pytest.raises(PolicyError, match=r"c.yaml:6:18: listeners\[0\].inbound_for: an inbound listener "
                                          r"cannot also have `tls`"):
        parse_document(text, where="c.yaml")

"""Edge TLS (issue 9 item 7) without Envoy: the policy keys, the PEM checks, last good per file, rotation
detection, and the UpstreamTlsContext a service's `tls` becomes."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from harness.pki_edge import TestCa, other_key_pem, write_atomically
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.policy.apply import apply_policy, explain_warnings
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.tls_material import TlsInputs, tls_inputs
from xds.sources.tls_files import TlsFiles
from xds.translate.clusters import build_cluster, cluster_key
from xds.translate.listeners import build_listener

CERT_MARK = b"-----BEGIN CERTIFICATE-----"


def _document(tls: str, address: str = "127.0.0.1:8443") -> str:
    return f"""
version: 1
services:
  - name: ext
    {tls}
    endpoints: [{{address: "{address}"}}]
listeners:
  - name: in
    port: 8080
    routes: [{{backends: [{{service: ext}}]}}]
"""


@pytest.fixture
def ca() -> TestCa:
    return TestCa()


def test_service_tls_becomes_an_upstream_tls_context_with_the_ca_inline(tmp_path: Path, ca: TestCa) -> None:
    ca_file = tmp_path / "ca.pem"
    write_atomically(ca_file, ca.cert_pem + other_key_pem())  # a key in a "bundle" is never sent on
    catalog, policy = parse_document(_document(
        f"tls: {{ca_file: {ca_file}, sni: api.example.com, subject_alt_names: [api.example.com, "
        f"'spiffe://example.org/api']}}"), where="t.yaml")
    material = TlsFiles().resolve(tls_inputs(policy))
    (spec,) = apply_policy(catalog, policy, group="g", material=material).clusters
    cluster = build_cluster(spec)
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "api.example.com"
    validation = context.common_tls_context.validation_context
    assert validation.trusted_ca.inline_bytes == ca.cert_pem
    assert b"PRIVATE KEY" not in cluster.SerializeToString()
    assert [(m.san_type, m.matcher.exact) for m in validation.match_typed_subject_alt_names] == [
        (common_pb2.SubjectAltNameMatcher.DNS, "api.example.com"),
        (common_pb2.SubjectAltNameMatcher.URI, "spiffe://example.org/api")]
    assert "BEGIN" not in repr(spec) and "PRIVATE" not in repr(material)


def test_sni_and_san_default_to_the_host_name_of_a_dns_service(tmp_path: Path, ca: TestCa) -> None:
    ca_file = tmp_path / "ca.pem"
    write_atomically(ca_file, ca.cert_pem)
    _, policy = parse_document(_document(f"tls: {{ca_file: {ca_file}}}"), where="t.yaml")
    catalog = Catalog((Service(ServiceName("ext"), (Endpoint("api.example.com", 443),)),))
    (spec,) = apply_policy(catalog, policy, group="g",
                           material=TlsFiles().resolve(tls_inputs(policy))).clusters
    assert spec.dns and spec.tls is not None
    assert (spec.tls.sni, spec.tls.subject_alt_names) == ("api.example.com", ("api.example.com",))
    # The CA bytes are part of the cluster's key: a rotated bundle is a changed cluster.
    assert cluster_key(spec) != cluster_key(type(spec)(**{**_fields(spec), "tls": None}))


def _fields(spec: object) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}  # type: ignore[attr-defined]


def test_validate_warns_about_port_443_without_tls() -> None:
    catalog, policy = parse_document(_document("protocol: http1", address="127.0.0.1:443"), where="t.yaml")
    (warning,) = explain_warnings(catalog, policy)
    assert "service 'ext' has endpoints on port 443 but no `tls`" in warning


def test_a_file_without_good_content_is_a_located_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    _, policy = parse_document(_document(f"tls: {{ca_file: {missing}}}"), where="t.yaml")
    with pytest.raises(PolicyError) as raised:
        TlsFiles().resolve(tls_inputs(policy))
    assert str(raised.value) == (f"{missing}: cannot read the file: No such file or directory "
                                 "(service 'ext' tls.ca_file)")


@pytest.mark.parametrize(("content", "message"), [
    (b"hello", "no PEM certificate found"),
    (CERT_MARK + b"\n!!!\n-----END CERTIFICATE-----\n", "malformed PEM"),
])
def test_bad_ca_bundles_keep_the_last_good(tmp_path: Path, ca: TestCa, content: bytes, message: str) -> None:
    ca_file = tmp_path / "ca.pem"
    write_atomically(ca_file, ca.cert_pem)
    files = TlsFiles()
    inputs = TlsInputs(ca_files={str(ca_file): "service 'ext' tls.ca_file"})
    assert files.resolve(inputs).ca_bundles[str(ca_file)] == ca.cert_pem
    write_atomically(ca_file, content)
    assert files.resolve(inputs).ca_bundles[str(ca_file)] == ca.cert_pem  # the last good
    assert message in files.errors()[str(ca_file)]
    write_atomically(ca_file, TestCa().cert_pem)
    assert files.resolve(inputs).ca_bundles[str(ca_file)] != ca.cert_pem
    assert files.errors() == {}


def _pair_inputs(cert: Path, key: Path) -> TlsInputs:
    return TlsInputs(key_pairs={(str(cert), str(key)): "listener 'in' tls.certificates[0]"})


def test_key_pair_problems_name_the_file_at_fault(tmp_path: Path, ca: TestCa) -> None:
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    good = ca.issue("a.example.com")
    good.write(cert, key)
    files = TlsFiles()
    inputs = _pair_inputs(cert, key)
    assert files.resolve(inputs).key_pairs[(str(cert), str(key))].cert_pem == good.cert_pem

    write_atomically(key, other_key_pem())
    assert files.resolve(inputs).key_pairs[(str(cert), str(key))].cert_pem == good.cert_pem
    assert files.errors() == {str(key): f"the private key does not match the certificate in {cert}"}

    ca.issue("a.example.com", san=False).write(cert, key)
    files.resolve(inputs)
    assert "no subjectAltName" in files.errors()[str(cert)]

    ca.issue("a.example.com", expired=True).write(cert, key)
    files.resolve(inputs)
    assert "expired" in files.errors()[str(cert)]

    write_atomically(key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    write_atomically(cert, good.cert_pem)
    files.resolve(inputs)
    assert files.errors() == {str(key): "malformed PEM: no unencrypted PRIVATE KEY block that parses"}
    # No message ever quotes the files.
    assert all("BEGIN" not in m and "AAAA" not in m for m in files.errors().values())

    write_atomically(key, other_key_pem())
    with pytest.raises(PolicyError, match="does not match"):  # a fresh store has no last good to fall back on
        TlsFiles().resolve(inputs)


def test_changed_notices_a_rotation_once(tmp_path: Path, ca: TestCa) -> None:
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    ca.issue("a.example.com").write(cert, key)
    files = TlsFiles()
    inputs = _pair_inputs(cert, key)
    files.resolve(inputs)
    assert not files.changed()
    rotated = ca.issue("a.example.com")
    rotated.write(cert, key)
    assert files.changed()
    assert not files.changed()  # one change asks for one rebuild
    assert files.resolve(inputs).key_pairs[(str(cert), str(key))].cert_pem == rotated.cert_pem
    # Within the racy window the files are hashed again on every call, and found unchanged.
    assert not files.changed()


def test_listener_tls_becomes_sni_filter_chains_with_sds_certificates(tmp_path: Path, ca: TestCa) -> None:
    paths = {}
    for name in ("a.test", "b.test"):
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        ca.issue(name).write(cert, key)
        paths[name] = (cert, key)
    certificates = ", ".join(f"{{cert_file: {c}, key_file: {k}, server_names: [{n}]}}"
                             for n, (c, k) in paths.items())
    catalog, policy = parse_document(f"""
version: 1
services: [{{name: web, endpoints: [{{address: "127.0.0.1:8080"}}]}}]
listeners:
  - {{name: edge, port: 8443, tls: {{certificates: [{certificates}]}},
     routes: [{{backends: [{{service: web}}]}}]}}
""", where="t.yaml")
    desired = apply_policy(catalog, policy, group="g", material=TlsFiles().resolve(tls_inputs(policy)))
    names = [f"xds-edge-cert:{paths[n][0]}" for n in ("a.test", "b.test")]
    assert [s.name for s in desired.secrets] == sorted(names)
    assert all(s.tls_certificate is not None and "PRIVATE KEY" in s.tls_certificate.private_key_pem
               for s in desired.secrets)
    (spec,) = desired.listeners
    listener = build_listener(spec)
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chains = [(list(c.filter_chain_match.server_names), c.transport_socket.name)
              for c in listener.filter_chains]
    tls_socket = "envoy.transport_sockets.tls"
    assert chains == [(["a.test"], tls_socket), (["b.test"], tls_socket)]
    for chain, secret in zip(listener.filter_chains, names, strict=True):
        context = tls_pb2.DownstreamTlsContext()
        assert chain.transport_socket.typed_config.Unpack(context)
        (sds,) = context.common_tls_context.tls_certificate_sds_secret_configs
        assert sds.name == secret and sds.sds_config.HasField("ads")
    assert b"PRIVATE KEY" not in listener.SerializeToString()  # keys travel in Secrets only

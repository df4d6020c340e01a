"""Which streams may receive secrets (docs/protocol.md R47)."""

from __future__ import annotations

import pytest

from xds.server.secret_access import peer_is_loopback, secrets_allowed


@pytest.mark.parametrize(("peer", "loopback"), [
    ("ipv4:127.0.0.1:5000", True),
    ("ipv4:127.8.9.10:5000", True),
    ("ipv6:[::1]:5000", True),
    ("ipv6:[::ffff:127.0.0.1]:5000", True),
    ("unix:/tmp/xds.sock", True),
    ("ipv4:10.0.0.5:5000", False),
    ("ipv6:[2001:db8::1]:5000", False),
    ("ipv6:[::ffff:10.0.0.1]:5000", False),
    ("ipv4:not-an-ip:1", False),
    ("dns:localhost:1", False),
    ("", False),
])
def test_loopback_peers(peer: str, loopback: bool) -> None:
    assert peer_is_loopback(peer) is loopback


def test_a_verified_client_certificate_allows_secrets_from_anywhere() -> None:
    auth = {"transport_security_type": [b"ssl"], "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----..."]}
    assert secrets_allowed(auth, "ipv4:10.0.0.5:5000") == (True, "client certificate verified")


def test_tls_without_a_client_certificate_is_refused_even_from_loopback() -> None:
    allowed, why = secrets_allowed({"transport_security_type": [b"ssl"]}, "ipv4:127.0.0.1:5000")
    assert not allowed and "without a client certificate" in why


def test_plaintext_is_allowed_from_loopback_only() -> None:
    assert secrets_allowed({}, "ipv4:127.0.0.1:5000")[0]
    assert secrets_allowed({"transport_security_type": [b"insecure"]}, "ipv6:[::1]:1")[0]
    allowed, why = secrets_allowed({}, "ipv4:192.168.1.20:5000")
    assert not allowed and "non-loopback" in why

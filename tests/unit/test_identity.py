"""The identity rule of the xDS port (xds/server/identity.py): which node a certificate may claim.

Pure function tests, including hostile SAN strings: a CA signs whatever names a CSR asks for, so nothing
that is not exactly `spiffe://<trust-domain>/group/<group>[/node/<node>]` may grant anything.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.pki import CertificateAuthority, spiffe_id
from xds.server.identity import (
    DenyReason,
    Grant,
    IdentityRule,
    PeerIdentity,
    check_claim,
    identity_from_pem,
    parse_dns_group,
    parse_spiffe,
)

TD = "xds.local"


def _reason(identity: PeerIdentity | None, node_id: str = "n1", group: str = "web",
            rule: IdentityRule = IdentityRule.SPIFFE) -> DenyReason | None:
    denial = check_claim(identity, node_id=node_id, group=group, trust_domain=TD, rule=rule)
    return None if denial is None else denial.reason


def _uri(*uris: str) -> PeerIdentity:
    return PeerIdentity(uris=uris)


def test_node_identity_allows_exactly_its_group_and_node() -> None:
    me = _uri("spiffe://xds.local/group/web/node/n1")
    assert _reason(me) is None
    assert _reason(me, node_id="n2") is DenyReason.NODE
    assert _reason(me, group="payments") is DenyReason.GROUP
    assert _reason(me, node_id="n2", group="payments") is DenyReason.GROUP


def test_group_identity_allows_any_node_of_its_group_only() -> None:
    group = _uri("spiffe://xds.local/group/web")
    assert _reason(group, node_id="anything-at-all") is None
    assert _reason(group, group="payments") is DenyReason.GROUP


def test_any_of_several_sans_may_grant() -> None:
    both = _uri("spiffe://other.td/group/payments", "spiffe://xds.local/group/web/node/n1")
    assert _reason(both) is None
    assert _reason(both, group="payments") is DenyReason.GROUP  # the payments grant is another domain's


def test_missing_certificate_identity_and_trust_domain() -> None:
    assert _reason(None) is DenyReason.NO_CERTIFICATE
    assert _reason(PeerIdentity()) is DenyReason.NO_IDENTITY
    assert _reason(PeerIdentity(dns_names=("web.xds.local",))) is DenyReason.NO_IDENTITY  # spiffe rule
    assert _reason(_uri("spiffe://evil.local/group/web/node/n1")) is DenyReason.TRUST_DOMAIN


def test_dns_group_rule_reads_dns_names_only_without_uri_sans() -> None:
    dns = PeerIdentity(dns_names=("web.xds.local",))
    assert _reason(dns, rule=IdentityRule.DNS_GROUP) is None
    assert _reason(dns, group="payments", rule=IdentityRule.DNS_GROUP) is DenyReason.GROUP
    dotted = PeerIdentity(dns_names=("a.b.xds.local",))
    assert _reason(dotted, group="a.b", rule=IdentityRule.DNS_GROUP) is None
    assert _reason(dotted, group="b", rule=IdentityRule.DNS_GROUP) is DenyReason.GROUP
    # A certificate with a URI SAN is judged by it alone: its DNS names add nothing.
    mixed = PeerIdentity(uris=("spiffe://xds.local/group/api",), dns_names=("web.xds.local",))
    assert _reason(mixed, rule=IdentityRule.DNS_GROUP) is DenyReason.GROUP


@pytest.mark.parametrize("uri", [
    "spiffe://xds.local/group/web/node/n1/../../group/payments",
    "spiffe://xds.local/group/web/node/..",
    "spiffe://xds.local/group/./web/node/n1",
    "spiffe://xds.local/group/web%2Fnode%2Fn1",
    "spiffe://xds.local/group/web/node/n1?x=1",
    "spiffe://xds.local/group/web/node/n1#frag",
    "spiffe://xds.local/group/web/node/n1/",
    "spiffe://xds.local/group/web/node/",
    "spiffe://xds.local/group//node/n1",
    "spiffe://xds.local//group/web/node/n1",
    "spiffe://xds.local/group/web/extra/n1",
    "spiffe://xds.local/group/web/node/n1/more",
    "spiffe://XDS.LOCAL/group/web/node/n1",
    "spiffe://xds.local:443/group/web/node/n1",
    "spiffe://user@xds.local/group/web/node/n1",
    "SPIFFE://xds.local/group/web/node/n1",
    "https://xds.local/group/web/node/n1",
    "spiffe:/xds.local/group/web/node/n1",
    "spiffe://xds.local",
    "spiffe://xds.local/",
    "spiffe:///group/web/node/n1",
    "spiffe://xds.local/group/web\x00/node/n1",
    "spiffe://xds.local/group/web/node/n1\n",
    "spiffe://xds.local/group/w\u0435b/node/n1",  # a Cyrillic e
    " spiffe://xds.local/group/web/node/n1",
    "spiffe://xds.local/group/web/node/n1 ",
    "spiffe://xds.local/group/web/node/n1" + "/x" * 1100,
])
def test_hostile_spiffe_strings_grant_nothing(uri: str) -> None:
    assert parse_spiffe(uri) is None
    assert _reason(_uri(uri)) is DenyReason.NO_IDENTITY


@pytest.mark.parametrize("name", [
    "xds.local", ".xds.local", "web..xds.local", "web.xds.local.", "WEB.xds.local", "web.xds.local.evil",
    "web.evilxds.local", "-web.xds.local", "web-.xds.local", "*.xds.local", "web\x00.xds.local",
])
def test_hostile_dns_names_grant_nothing(name: str) -> None:
    assert parse_dns_group(name, TD) is None


def test_node_ids_outside_the_spiffe_alphabet_need_a_group_identity() -> None:
    # A node id with '/' cannot be written in a SPIFFE path segment, so no node identity can claim it...
    assert _reason(_uri("spiffe://xds.local/group/web/node/a"), node_id="a/b") is DenyReason.NODE
    # ...but a group-wide identity can.
    assert _reason(_uri("spiffe://xds.local/group/web"), node_id="a/b") is None


def test_parse_spiffe_forms() -> None:
    assert parse_spiffe("spiffe://xds.local/group/web") == Grant("xds.local", "web", None)
    assert parse_spiffe("spiffe://td_1.example-2/group/A.b_c-9/node/n.1") == Grant(
        "td_1.example-2", "A.b_c-9", "n.1")


def test_denial_messages_are_bounded_and_escaped() -> None:
    hostile = "spiffe://xds.local/group/" + "w" * 5000 + "\x1b[31m"
    denial = check_claim(_uri(hostile, "spiffe://xds.local/group/other"), node_id="n\x1b", group="web",
                         trust_domain=TD)
    assert denial is not None
    assert "\x1b" not in denial.message and len(denial.message) < 1000


@given(node=st.text(max_size=30), group=st.text(max_size=30), other=st.text(max_size=30))
def test_a_claim_is_allowed_only_by_an_identity_naming_it(node: str, group: str, other: str) -> None:
    identity = _uri(f"spiffe://xds.local/group/{group}/node/{node}")
    allowed = check_claim(identity, node_id=node, group=group, trust_domain=TD) is None
    # Allowed exactly when both strings are valid SPIFFE path segments.
    assert allowed == (parse_spiffe(identity.uris[0]) == Grant(TD, group, node))
    if other != group:
        assert check_claim(identity, node_id=node, group=other, trust_domain=TD) is not None


def test_identity_from_a_real_certificate() -> None:
    ca = CertificateAuthority.create()
    cert = ca.issue(common_name="x", uris=(spiffe_id(TD, "web", "n1"),), dns=("web.xds.local",), client=True)
    assert identity_from_pem(cert.cert_pem) == PeerIdentity(uris=("spiffe://xds.local/group/web/node/n1",),
                                                            dns_names=("web.xds.local",))
    assert identity_from_pem(ca.issue(common_name="bare").cert_pem) == PeerIdentity()

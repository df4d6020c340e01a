"""The declared keys of edge TLS (issue 9 item 7): a service's upstream `tls` and a listener's `tls`.

Both name files on the control plane's own disk (a CA bundle, certificate chains, private keys), never their
content: the control plane reads them (xds/sources/tls_files.py), so a policy document, a Consul KV value or
a TrafficPolicy object never carries a private key, and a rotated file is noticed without a policy change
(docs/security.md, "Edge TLS").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from xds.policy.fields import ListOf, Nested, Text, declare, erase, shape

# Absolute paths only: a relative one would depend on the control plane's working directory, and a policy
# from Consul KV or Kubernetes has no directory of its own to be relative to.
PATH_RE = re.compile(r"/[^\x00-\x1f\x7f]*")
PATH_RULE = "must be an absolute path (starting with '/') without control characters"
# An SNI value is a host name without a port or wildcard (RFC 6066 section 3: "HostName").
SNI_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
SNI_RULE = "must be a host name without a port, such as api.example.com"
# The names of a listener certificate: host names, or one leading '*.' wildcard label, which is what Envoy's
# filter_chain_match.server_names accepts (listener_components.proto).
SERVER_NAME_RE = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
SERVER_NAME_RULE = ("must be a host name, optionally starting with '*.', such as shop.example.com or "
                    "*.example.com")
# A SAN to require of the upstream: a DNS name (wildcards as Envoy matches them exactly) or a URI such as a
# SPIFFE id (`spiffe://trust-domain/...`, docs/security.md).
SAN_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
SAN_RULE = "must be a DNS name (optionally '*.'-prefixed) or a URI such as spiffe://example.org/web"


@dataclass(frozen=True, slots=True)
class UpstreamTlsPolicy:
    """Envoy originates TLS to the service's endpoints (an external API on port 443, say)."""

    ca_file: str = field(metadata=declare(
        "ca_file", Text(PATH_RE, PATH_RULE),
        "PEM file of the CA certificates that may sign the endpoints' certificates, read by the control "
        "plane (absolute path) and sent to Envoy; re-read when it changes.", required=True))
    sni: str | None = field(default=None, metadata=declare(
        "sni", Text(SNI_RE, SNI_RULE),
        "The server name Envoy sends in the TLS handshake.",
        shown_default="the endpoints' host name when they all share one (an ExternalName), else none"))
    subject_alt_names: tuple[str, ...] = field(default=(), metadata=declare(
        "subject_alt_names", ListOf(Text(SAN_RE, SAN_RULE), item_doc="A DNS name or a URI.", nonempty=True,
                                    list_type="set"),
        "The endpoint's certificate must carry one of these subject alternative names (DNS names, or URIs "
        "such as `spiffe://...`); otherwise the connection fails and Envoy counts `ssl.fail_verify_san`.",
        shown_default="`[<sni>]` when there is an SNI, else any certificate the CA signed"))


UPSTREAM_TLS = shape(UpstreamTlsPolicy, "TLS from Envoy to the service's endpoints.")


@dataclass(frozen=True, slots=True)
class ListenerCertificate:
    """One certificate a TLS listener serves, to the clients that ask for one of `server_names`."""

    cert_file: str = field(metadata=declare(
        "cert_file", Text(PATH_RE, PATH_RULE),
        "PEM file of the certificate chain, leaf first (absolute path on the control plane's host).",
        required=True))
    key_file: str = field(metadata=declare(
        "key_file", Text(PATH_RE, PATH_RULE),
        "PEM file of the certificate's private key (absolute path on the control plane's host).",
        required=True))
    server_names: tuple[str, ...] = field(default=(), metadata=declare(
        "server_names", ListOf(Text(SERVER_NAME_RE, SERVER_NAME_RULE), item_doc="A host name or *.domain.",
                               nonempty=True, list_type="set"),
        "The SNI names this certificate is served for (`shop.example.com`, `*.example.com`). At most one "
        "certificate of a listener leaves it out: that one is served to clients whose SNI matches no "
        "other, or who send none.", shown_default="any name no other certificate claims"))


LISTENER_CERTIFICATE = shape(ListenerCertificate, "A certificate and the host names it is served for.")


@dataclass(frozen=True, slots=True)
class ListenerTlsPolicy:
    """The listener terminates TLS, choosing the certificate by the client's SNI."""

    certificates: tuple[ListenerCertificate, ...] = field(default=(), metadata=declare(
        "certificates", ListOf(Nested(erase(LISTENER_CERTIFICATE)), nonempty=True),
        "At least one certificate (below). Each becomes a filter chain of the listener matched on its "
        "`server_names`; cert and key reach Envoy over SDS, so a rotated file is served without a restart.",
        required=True))


LISTENER_TLS = shape(ListenerTlsPolicy,
                     "TLS termination on a listener, one certificate per set of host names.")

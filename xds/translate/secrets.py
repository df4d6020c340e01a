"""SecretSpec -> envoy.extensions.transport_sockets.tls.v3.Secret, and the SDS references to secrets.

Secrets travel on the ADS stream like every other resource (docs/protocol.md R46): clusters and listeners
name them in an `SdsSecretConfig` whose config source is ADS, and Envoy asks for those names over SDS. PEM
goes inline (`inline_bytes`): the file paths of the control plane mean nothing on the proxy's machine, and a
rotated certificate is a new Secret version, which Envoy swaps in for new handshakes without touching the
connections it has (issue 9).
"""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from xds.policy.desired import SecretSpec
from xds.translate.delivery import ADS, Delivery, config_source


def sds_secret_config(name: str, delivery: Delivery = ADS) -> secret_pb2.SdsSecretConfig:
    """SdsSecretConfig{name, sds_config}: fetched over the ADS stream, or over StreamSecrets for a
    single-type Envoy (docs/protocol.md C1)."""
    config = secret_pb2.SdsSecretConfig(name=name)
    config.sds_config.CopyFrom(config_source(delivery))
    return config


def build_secret(spec: SecretSpec) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=spec.name)
    if spec.tls_certificate is not None:
        certificate: common_pb2.TlsCertificate = secret.tls_certificate
        certificate.certificate_chain.inline_bytes = spec.tls_certificate.certificate_chain_pem.encode()
        certificate.private_key.inline_bytes = spec.tls_certificate.private_key_pem.encode()
    elif spec.validation_context is not None:
        secret.validation_context.trusted_ca.inline_bytes = spec.validation_context.trusted_ca_pem.encode()
    return secret


REDACTED = b"[redacted]"


def redact(secret: secret_pb2.Secret) -> secret_pb2.Secret:
    """A copy of `secret` without its private key, for anything a person reads: `xds render`, the
    management API's GetSnapshot (docs/security.md: private keys never appear outside the SDS response)."""
    copy = secret_pb2.Secret()
    copy.CopyFrom(secret)
    if copy.HasField("tls_certificate") and copy.tls_certificate.HasField("private_key"):
        copy.tls_certificate.private_key.Clear()
        copy.tls_certificate.private_key.inline_bytes = REDACTED
    return copy

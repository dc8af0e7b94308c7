"""TLS contexts for every listener and caller of the node, made from `node.tls` (DICOM PS3.15 B.9:
TLS 1.2 or later, the BCP 195 profile), so that the DICOM SCP, the SCUs, MLLP both ways and the API
share one certificate, one key and one trust list."""
from __future__ import annotations

import ssl

from neuropetrix.config.settings import Peer, TlsSettings


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2      # BCP 195: no SSL, no TLS 1.0/1.1
    return ctx


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """For a listener: our certificate; callers' certificates asked for and verified against
    `ca_certificates` when it is set (a caller without one is still served: client certificates are
    optional), not asked for otherwise."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates is not None:
        ctx.load_verify_locations(tls.ca_certificates)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: TlsSettings | None) -> ssl.SSLContext:
    """For a caller: the peer's certificate verified against `ca_certificates` (the system's trust
    store when unset) and its host name or address checked; our certificate offered when we have one."""
    ctx = _harden(ssl.create_default_context(cafile=str(tls.ca_certificates) if tls and tls.ca_certificates
                                             else None))
    if tls is not None:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
        ctx.check_hostname = tls.verify_peer_names
    return ctx



def peer_tls_args(peer: Peer, tls: TlsSettings | None) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's `tls_args` for calling `peer`: TLS with `tls` (node.tls) when the peer has
    `tls: true` (its host name or address checked), None (plain TCP) otherwise."""
    return (client_context(tls), peer.host) if peer.tls else None

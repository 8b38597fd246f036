"""Self-signed TLS for the EWS sandbox: certificate generation, server context, channel-binding hash.

The certificate names 127.0.0.1, ::1 and localhost so that clients which verify against
``cert_pem_path`` succeed without disabling verification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateFiles:
    cert_pem_path: str
    key_pem_path: str
    cert_der: bytes


def generate_self_signed(
    directory: str | os.PathLike[str], *, common_name: str = "localhost"
) -> CertificateFiles:
    """Write ``sandbox-cert.pem`` and ``sandbox-key.pem`` (mode 0600) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # EC P-256 keeps generation fast (RSA-2048 takes noticeably longer per test fixture).
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        # Self-signed and used directly as trust anchor: CA=True lets OpenSSL accept it as its own issuer.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "sandbox-cert.pem"
    key_path = directory / "sandbox-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return CertificateFiles(str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER))


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_pem_path, files.key_pem_path)
    return ctx


def endpoint_binding_hash(cert_der: bytes) -> bytes:
    """The RFC 5929 ``tls-server-end-point`` hash: SHA-256 for MD5/SHA-1/SHA-256 signed certificates.

    NTLM clients over HTTPS (requests_ntlm) put this into the channel bindings; the sandbox checks it
    as an IIS with Extended Protection would.
    """
    cert = x509.load_der_x509_certificate(cert_der)
    algo = cert.signature_hash_algorithm
    if algo is None or algo.name in ("md5", "sha1", "sha256"):
        return hashlib.sha256(cert_der).digest()
    return hashlib.new(algo.name, cert_der).digest()

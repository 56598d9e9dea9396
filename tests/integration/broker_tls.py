"""The session broker's SASL_SSL listener (scripts/kafka/kafka.sh): its certificates, made
anew by conftest.py before the broker starts, and its one SASL user.

A test CA signs the broker's certificate (127.0.0.1, localhost); a second CA that signed
nothing stands for "a CA that is not the broker's". Keys are P-256: quick to make, and
Kafka's PEM keystore reads them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SASL_USER = "herald-source"
SASL_PASSWORD = "sasl-ssl-password-of-the-test-broker"
VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True)
class BrokerTls:
    """Where the listener's files are, under one directory."""

    directory: Path

    @property
    def keystore(self) -> Path:
        """The broker's key and certificate chain (kafka.sh's HERALD_KAFKA_SSL_KEYSTORE)."""
        return self.directory / "broker.pem"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate: a source's right ssl_cafile."""
        return self.directory / "ca.pem"

    @property
    def stranger_ca_file(self) -> Path:
        """A CA that did not sign it: a source trusting only this one must refuse the broker."""
        return self.directory / "stranger-ca.pem"

    def kafka_env(self, port: int) -> dict[str, str]:
        """kafka.sh's variables for the listener on `port`."""
        return {
            "HERALD_KAFKA_SASL_SSL_PORT": str(port),
            "HERALD_KAFKA_SSL_KEYSTORE": str(self.keystore),
            "HERALD_KAFKA_SASL_USER": SASL_USER,
            "HERALD_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        }

    def write(self) -> None:
        """Make both CAs and the broker's certificate; called before the broker starts."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca = _certificate("Herald test CA", None)
        broker_key, broker = _certificate("127.0.0.1", (ca_key, ca))
        _, stranger = _certificate("Herald test CA", None)  # the same name, another key
        self.ca_file.write_bytes(_pem(ca))
        self.stranger_ca_file.write_bytes(_pem(stranger))
        key = broker_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.keystore.write_bytes(key + _pem(broker) + _pem(ca))


Signer = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _certificate(
    name: str, issuer: Signer | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and its certificate: a CA's (self-signed) without `issuer`, else a
    server's for 127.0.0.1 and localhost signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signing_key, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
    )
    if issuer is None:
        builder = builder.add_extension(_key_usage(ca=True), True)
    else:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key())
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = (
            builder.add_extension(authority, False)
            .add_extension(_key_usage(ca=False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(names), False)
        )
    return key, builder.sign(signing_key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)

"""pki.py: a throw-away test CA and server certificates for the integration
tests, made with python3-cryptography into a temporary directory.

    p = make_pki(tmpdir)
    p.ca                      # PEM file of the test CA (trust anchor)
    p.good.cert, p.good.key   # localhost, smtp.gmail.test + 127.0.0.1, signed by the CA
    p.wrong_host              # DNS:wrong.example only, signed by the CA
    p.self_signed             # localhost, self-signed (not from the CA)
    p.expired                 # localhost, signed by the CA, expired yesterday
    p.leaf("good")            # the same, by name

Keys are ECDSA P-256: quick to make, and every TLS stack in use speaks it.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LEAF_NAMES = ("good", "wrong_host", "self_signed", "expired")


@dataclass(frozen=True)
class Leaf:
    cert: str   # path of the PEM certificate
    key: str    # path of the PEM private key (unencrypted)


@dataclass(frozen=True)
class Pki:
    dir: str
    ca: str         # path of the CA certificate, PEM
    ca_key: str
    good: Leaf
    wrong_host: Leaf
    self_signed: Leaf
    expired: Leaf

    def leaf(self, name):
        if name not in LEAF_NAMES:
            raise KeyError(f"no test certificate named {name!r}")
        return getattr(self, name)


def _name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtpvault tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(now):
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("smtpvault test CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_leaf(cn, dns, ips, issuer_key, issuer_cert, not_before, not_after):
    """A server certificate; issuer_key None means self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if issuer_key is None:
        signer, issuer_name = key, _name(cn)
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    else:
        signer, issuer_name = issuer_key, issuer_cert.subject
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(aki, critical=False)
            .sign(signer, hashes.SHA256()))
    return key, cert


def make_pki(directory):
    """Create the CA and the four leaves under directory; return a Pki."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    day = datetime.timedelta(days=1)

    ca_key, ca_cert = _make_ca(now)
    ca_path = os.path.join(directory, "ca.pem")
    ca_key_path = os.path.join(directory, "ca.key")
    _write_cert(ca_path, ca_cert)
    _write_key(ca_key_path, ca_key)

    specs = {
        "good": ("localhost", ["localhost", "smtp.gmail.test"], ["127.0.0.1"], ca_key,
                 now - day, now + 30 * day),
        "wrong_host": ("wrong.example", ["wrong.example"], [], ca_key, now - day, now + 30 * day),
        "self_signed": ("localhost", ["localhost"], ["127.0.0.1"], None, now - day, now + 30 * day),
        "expired": ("localhost", ["localhost"], ["127.0.0.1"], ca_key, now - 30 * day, now - day),
    }
    leaves = {}
    for name, (cn, dns, ips, issuer_key, nb, na) in specs.items():
        key, cert = _make_leaf(cn, dns, ips, issuer_key, ca_cert, nb, na)
        cert_path = os.path.join(directory, f"{name}.pem")
        key_path = os.path.join(directory, f"{name}.key")
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        leaves[name] = Leaf(cert=cert_path, key=key_path)

    return Pki(dir=directory, ca=ca_path, ca_key=ca_key_path, **leaves)

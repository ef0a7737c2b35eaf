"""Test certificates, made at test time with the ``openssl`` command, and real TLS
peers (``openssl s_server``) that are always stopped.

``make_certs(directory)`` gives a :class:`Certs`: a test CA, an unrelated CA (for
"unknown CA" failures), and methods issuing server and client certificates from
the test CA. The certificates are small EC (P-256) ones with the extensions a
strict verifier wants (basic constraints, key usage, key identifiers), valid for
two days, or already expired on request::

    from tests.tls_helpers import certs  # a module-scoped pytest fixture

    def test_something(certs):
        cert, key = certs.server("a.test")
        ...
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, Process, free_port

__all__ = ["OPENSSL", "Certs", "certs", "make_certs", "s_server"]

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

_serials = itertools.count(1000)


def _run(*args: str) -> None:
    done = subprocess.run([OPENSSL, *args], capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr.decode()}")


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/O=trioxy tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


@dataclass
class Certs:
    """A directory of test certificates. Paths are returned as ``str``."""

    directory: Path
    ca: str
    ca_key: str
    other_ca: str
    other_ca_key: str
    _issued: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)

    def _issue(
        self,
        stem: str,
        subject: str,
        extensions: str,
        days: int = 2,
        ca: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        key = self.directory / f"{stem}.key"
        csr = self.directory / f"{stem}.csr"
        cert = self.directory / f"{stem}.pem"
        ext = self.directory / f"{stem}.ext"
        ext.write_text(
            extensions + "\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
        )
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        _run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", subject, "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        _run(
            "x509", "-req", "-in", str(csr), "-CA", ca_cert, "-CAkey", ca_key,
            "-set_serial", str(next(_serials)), "-days", str(days),
            "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return str(cert), str(key)

    def server(self, *names: str, expired: bool = False, other_ca: bool = False) -> tuple[str, str]:
        """A server certificate for ``names`` (DNS names or IP addresses), subject
        ``CN=names[0]``: ``(cert, key)``. ``other_ca``: issued by the unrelated CA."""
        tag = ("server", *names, str(expired), str(other_ca))
        if tag not in self._issued:
            alt = ",".join(
                f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names
            )
            stem = "-".join(tag).replace(":", "_").replace("*", "star")
            self._issued[tag] = self._issue(
                stem,
                f"/O=trioxy tests/CN={names[0]}",
                f"subjectAltName={alt}\nextendedKeyUsage=serverAuth",
                days=-1 if expired else 2,
                ca=(self.other_ca, self.other_ca_key) if other_ca else None,
            )
        return self._issued[tag]

    def client(self, name: str, other_ca: bool = False) -> tuple[str, str]:
        """A client certificate with subject ``O=trioxy tests, CN=name``."""
        tag = ("client", name, str(other_ca))
        if tag not in self._issued:
            self._issued[tag] = self._issue(
                "-".join(tag),
                f"/O=trioxy tests/CN={name}",
                "extendedKeyUsage=clientAuth",
                ca=(self.other_ca, self.other_ca_key) if other_ca else None,
            )
        return self._issued[tag]


def make_certs(directory: Path) -> Certs:
    """A test CA and an unrelated one in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _new_ca(directory, "test-ca")
    other, other_key = _new_ca(directory, "other-ca")
    return Certs(directory, str(ca), str(ca_key), str(other), str(other_key))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Certificates shared by the tests of one module."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextmanager
def s_server(cert: str, key: str, *args: str) -> Iterator[int]:
    """Run ``openssl s_server -www`` (a TLS server answering ``GET /`` with a status
    page) with ``cert``/``key`` on a free loopback port for the duration of the
    block; yields the port. ``args`` are added to its command line."""
    port = free_port()
    argv = [
        OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
        "-www", "-quiet", *args,
    ]  # fmt: skip
    proc = Process(argv, dict(os.environ), ROOT)
    try:
        proc.wait_listening(port)
        yield port
    finally:
        proc.close()

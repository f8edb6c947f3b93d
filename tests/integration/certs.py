"""A throw-away PKI for the TLS tests, made with the `openssl` CLI at test time.

    pki = TestPKI(tmp_dir)
    server = pki.issue("server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    server.cert, server.key        # PEM file paths (str)

Certificates are valid for two days from their creation. The CA certificate is pki.ca.cert; a second,
unrelated CA (pki.other_ca) signs certificates nobody should trust.
"""

import itertools
import subprocess
from pathlib import Path


class Cert:
    def __init__(self, cert, key, cn):
        self.cert, self.key, self.cn = str(cert), str(key), cn

    def __repr__(self):
        return f"Cert({self.cn!r}, {self.cert})"


def openssl(*args):
    """Run the openssl CLI; raises with its stderr on failure."""
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc.stdout


def _keygen(path, kind):
    if kind == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


class TestPKI:
    __test__ = False  # not a pytest test class

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._serial = itertools.count(1000)
        self.ca = self._make_ca("ca", "Portico Test CA")
        self.other_ca = self._make_ca("other-ca", "Untrusted Test CA")

    def _make_ca(self, name, cn):
        key, cert = self.dir / f"{name}.key", self.dir / f"{name}.pem"
        _keygen(key, "ec")
        openssl("req", "-x509", "-new", "-key", key, "-out", cert, "-subj", f"/CN={cn}", "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash")
        return Cert(cert, key, cn)

    def issue(self, name, cn, dns=(), ips=(), client=False, ca=None, kind="ec"):
        """A leaf certificate `name`.pem / `name`.key for CN `cn` with the given SANs, signed by `ca`
        (default: the test CA); a client certificate (clientAuth) when `client`."""
        ca = ca or self.ca
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                          self.dir / f"{name}.pem")
        ext = self.dir / f"{name}.ext"
        _keygen(key, kind)
        openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}")
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature" + ("" if kind == "ec" else ",keyEncipherment"),
                 "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth"),
                 "authorityKeyIdentifier=keyid"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-out", cert,
                "-set_serial", next(self._serial), "-days", "2", "-extfile", ext)
        return Cert(cert, key, cn)

"""CAs and certificates made with the openssl command, for the Vault
stand-in's https listener and the cert auth method's client certificates."""
import subprocess
from pathlib import Path


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class CA:
    def __init__(self, directory, name):
        self.dir = Path(directory)
        self.name = name
        self.key = self.dir / f"{name}-ca.key"
        self.cert = self.dir / f"{name}-ca.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
                 "-subj", f"/CN={name} test CA")

    def issue(self, cn, san=None, client=False):
        """(cert, key) paths of a leaf certificate for `cn`; the key is 0600."""
        base = self.dir / f"{self.name}-{cn}"
        key, csr, cert = (base.with_suffix(s) for s in (".key", ".csr", ".pem"))
        ext = base.with_suffix(".ext")
        lines = ["basicConstraints=CA:FALSE",
                 f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))
        key.chmod(0o600)
        return cert, key

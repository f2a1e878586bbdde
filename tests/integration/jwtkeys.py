"""Key pairs and signed JWTs for the jwt auth tests (Debian's python3-jwt
and python3-cryptography), like a workload identity provider would issue."""
import time

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class KeyPair:
    def __init__(self, alg="RS256"):
        self.alg = alg
        if alg == "RS256":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_pem(self):
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, ttl=300, now=None, **claims):
        now = time.time() if now is None else now
        body = {"iss": "https://idp.example", "sub": "system:serviceaccount:prod:app",
                "aud": "vault", "iat": int(now), "nbf": int(now), "exp": int(now + ttl)}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return pyjwt.encode(body, self.key, algorithm=self.alg)

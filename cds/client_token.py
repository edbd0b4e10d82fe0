"""Acting as a CDS client: signing the bearer JWT a client sends, and the development client's keys.

``sign_client_token`` makes the token the CDS Hooks specification asks a client to send (``cds
dev-token`` and the command line's requests use it). ``dev_client`` keeps one ES384 key pair under
``instance/dev-client/`` (created on first use, private key readable by its owner only): in development
mode the service trusts its public key for the issuer ``urn:cds:dev-client``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

DEV_ISS = "urn:cds:dev-client"
DEV_ALG = "ES384"
PRIVATE_FILE = "private-jwk.json"
PUBLIC_FILE = "jwks.json"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def sign_client_token(private_jwk: Mapping[str, Any], iss: str, aud: str | list[str], kid: str | None = None,
                      alg: str | None = None, *, lifetime: int = 300, jti: str | None = None,
                      tenant: str | None = None, jku: str | None = None, now: float | None = None,
                      extra_claims: Mapping[str, Any] | None = None) -> str:
    """A signed client JWT for a call to the endpoint at ``aud`` (its exact URL)."""
    kid = kid or private_jwk.get("kid")
    alg = alg or private_jwk.get("alg") or ("ES384" if private_jwk.get("kty") == "EC" else "RS384")
    if not kid:
        raise ValueError("the signing key has no 'kid'; pass one")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": iss, "aud": aud, "exp": issued + lifetime, "iat": issued,
                              "jti": jti or str(uuid.uuid4())}
    if tenant is not None:
        claims["tenant"] = tenant
    claims.update(extra_claims or {})
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    if jku is not None:
        headers["jku"] = jku
    key = jwt.PyJWK(dict(private_jwk), algorithm=alg)
    return jwt.encode(claims, key.key, algorithm=alg, headers=headers)


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The public half of a JWK (private members dropped, ``key_ops`` set to verify)."""
    out = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
    if "key_ops" in out:
        out["key_ops"] = ["verify"]
    return out


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC or RSA key."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _new_dev_key() -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private))
    jwk.update({"alg": DEV_ALG, "use": "sig", "kid": thumbprint(jwk)})
    return jwk


def dev_client(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(private_jwk, public_jwks)`` of the development client, created in ``folder`` the first time.

    Safe when several processes start at once: the key is written to a temporary file and linked into
    place, so exactly one key pair wins and every process reads that one.
    """
    folder = Path(folder)
    private_path = folder / PRIVATE_FILE
    if not private_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{PRIVATE_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(_new_dev_key(), out, indent=2)
        try:
            os.link(tmp, private_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    private = json.loads(private_path.read_text(encoding="utf-8"))
    jwks = {"keys": [public_jwk(private)]}
    public_path = folder / PUBLIC_FILE
    if not public_path.exists():
        public_path.write_text(json.dumps(jwks, indent=2) + "\n", encoding="utf-8")
    return private, jwks

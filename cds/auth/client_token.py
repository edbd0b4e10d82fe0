"""Acting as a CDS client: signing the bearer JWT a client sends, its key files, and the development keys.

``sign_client_token`` makes the token the CDS Hooks specification asks a client to send: ``iss``,
``aud`` (the exact URL called), ``iat``, ``exp`` and a fresh ``jti``; header ``kid`` and ``typ: JWT``.
``cds dev-token`` uses it directly; ``cds request`` and ``cds replay`` go through a ``Signer`` (one
token per call) made by ``signer_from``. Only asymmetric keys are used (ES/RS/PS), never ``none`` or HS*.

A key file (``--key FILE``) holds a private JWK, or a JWK Set holding one (``load_private_jwk``).
``dev_client`` keeps one ES384 key pair under ``instance/dev-client/`` (created on first use, private key
readable by its owner only): in development mode the service trusts its public key for the issuer
``urn:cds:dev-client``, and the command line signs with it when no ``--key`` is given.

Tokens are never printed or logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
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
ASYMMETRIC = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class KeyFileError(ValueError):
    """The key file is missing, unreadable, or holds no usable private key."""


def default_alg(jwk: Mapping[str, Any]) -> str:
    """The key's own ``alg``, else the one its type and curve imply (ES384 / RS384 when unsure)."""
    if jwk.get("alg"):
        return str(jwk["alg"])
    if jwk.get("kty") == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(str(jwk.get("crv")), "ES384")
    return "RS384"


def sign_client_token(private_jwk: Mapping[str, Any], iss: str, aud: str | list[str], kid: str | None = None,
                      alg: str | None = None, *, lifetime: int = 300, jti: str | None = None,
                      tenant: str | None = None, jku: str | None = None, now: float | None = None,
                      extra_claims: Mapping[str, Any] | None = None) -> str:
    """A signed client JWT for a call to the endpoint at ``aud`` (its exact URL)."""
    kid = kid or private_jwk.get("kid")
    alg = alg or default_alg(private_jwk)
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


def load_private_jwk(path: str | Path) -> dict[str, Any]:
    """The first private signing key in a JWK or JWK Set file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"key file {path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"key file {path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    keys = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(keys, list):
        raise KeyFileError(f"key file {path}: 'keys' must be a list")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("EC", "RSA") or "d" not in key:
            continue
        if key.get("use", "sig") != "sig" or default_alg(key) not in ASYMMETRIC:
            continue
        if not key.get("kid"):
            raise KeyFileError(f"key file {path}: the private key has no 'kid'")
        return dict(key)
    raise KeyFileError(f"key file {path}: no private EC or RSA signing key (a JWK with 'd')")


@dataclass
class Signer:
    """Signs one token per call: ``signer.token(url)``; the key is checked when the signer is made."""

    jwk: dict[str, Any] = field(repr=False)
    iss: str = DEV_ISS
    lifetime: int = 300

    def __post_init__(self) -> None:
        self.alg = default_alg(self.jwk)
        self.kid = str(self.jwk["kid"])
        jwt.PyJWK(self.jwk, algorithm=self.alg)

    def token(self, aud: str, *, now: float | None = None) -> str:
        return sign_client_token(self.jwk, self.iss, aud, self.kid, self.alg, lifetime=self.lifetime, now=now)

    def headers(self, aud: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud)}"}


def default_key_path() -> Path:
    return Path(os.environ.get("CDS_DEV_CLIENT_DIR") or "instance/dev-client") / PRIVATE_FILE


def signer_from(key_file: str | Path | None, iss: str = DEV_ISS) -> Signer | None:
    """The signer for ``--key`` (required to exist), else the dev client's key if present, else None."""
    if key_file:
        return Signer(load_private_jwk(key_file), iss=iss)
    default = default_key_path()
    if default.is_file():
        return Signer(load_private_jwk(default), iss=iss)
    return None


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

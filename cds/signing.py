"""Signing the bearer JWT a CDS client sends with every call (``cds request``, ``cds replay``).

The key is a private JWK, or a JWK Set holding one, in a file (``--key FILE``); by default the development
client's key ``$CDS_DEV_CLIENT_DIR/private-jwk.json`` (``instance/dev-client/``) when it exists, which a
service in development mode trusts for the issuer ``urn:cds:dev-client``. Every token carries ``iss``,
``aud`` (the exact URL called), ``iat``, ``exp`` and a fresh ``jti``; its header ``kid`` and ``typ: JWT``.
Only ES384 and RS384 keys (and the other ES/RS/PS sizes) are used; never ``none`` or HS*.

Tokens are never printed or logged.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

DEV_ISS = "urn:cds:dev-client"
DEV_KEY_FILE = "private-jwk.json"
ASYMMETRIC = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
PRIVATE_MEMBER = {"EC": "d", "RSA": "d"}


class KeyFileError(ValueError):
    """The key file is missing, unreadable, or holds no usable private key."""


def default_key_path() -> Path:
    return Path(os.environ.get("CDS_DEV_CLIENT_DIR") or "instance/dev-client") / DEV_KEY_FILE


def _default_alg(jwk: Mapping[str, Any]) -> str:
    if jwk.get("alg"):
        return str(jwk["alg"])
    if jwk.get("kty") == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(str(jwk.get("crv")), "ES384")
    return "RS384"


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
        if not isinstance(key, dict) or PRIVATE_MEMBER.get(str(key.get("kty"))) not in key:
            continue
        if key.get("use", "sig") != "sig" or _default_alg(key) not in ASYMMETRIC:
            continue
        if not key.get("kid"):
            raise KeyFileError(f"key file {path}: the private key has no 'kid'")
        return dict(key)
    raise KeyFileError(f"key file {path}: no private EC or RSA signing key (a JWK with 'd')")


@dataclass
class Signer:
    """Signs one token per call: ``signer.token(url)``."""

    jwk: dict[str, Any] = field(repr=False)
    iss: str = DEV_ISS
    lifetime: int = 300

    def __post_init__(self) -> None:
        self.alg = _default_alg(self.jwk)
        self.kid = str(self.jwk["kid"])
        self._key = jwt.PyJWK(self.jwk, algorithm=self.alg).key

    def token(self, aud: str, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.iss,
            "aud": aud,
            "iat": issued,
            "exp": issued + self.lifetime,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    def headers(self, aud: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud)}"}


def signer_from(key_file: str | Path | None, iss: str = DEV_ISS) -> Signer | None:
    """The signer for ``--key`` (required to exist), else the dev client's key if present, else None."""
    if key_file:
        return Signer(load_private_jwk(key_file), iss=iss)
    default = default_key_path()
    if default.is_file():
        return Signer(load_private_jwk(default), iss=iss)
    return None

"""Checking a CDS client's bearer JWT, as the CDS Hooks specification asks ("Trusting CDS Clients").

    header  alg (asymmetric only), kid (required), typ "JWT", optional jku (registered for the iss)
    claims  iss (a trusted client), aud (the exact URL called; string or array), exp, iat, jti,
            optional tenant

No Flask and no network here: the key sets (``JwksCache``) and the first-use check of the token id
(``TokenIdStore.remember``) are handed in. Every failure raises ``Unauthorized`` whose message says why,
for the server log only; the client gets a bare 401. Nothing here logs or keeps the token itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt

from cds.auth.trusted_clients import ALGORITHMS, JwksCache, TrustedClient, VerificationKey
from cds.errors import TokenReplayed, Unauthorized
from cds.settings import default as setting_default

log = logging.getLogger("cds.auth")

MAX_TOKEN_CHARS = 8192
MAX_JTI_CHARS = 512

#: remember(iss, jti, expires_at) -> False when the pair was seen before
#: ``(iss, jti, expires_at)`` -> True the first time the token id is used, False when used again (a replay)
FirstUseCheck = Callable[[str, str, dt.datetime], bool]


@dataclass(frozen=True)
class ClientIdentity:
    iss: str
    kid: str
    jti: str
    tenant: str | None
    expires_at: dt.datetime


def normalize_url(url: str) -> str:
    """Compare URLs as the endpoint they name: case-blind scheme and host, no default port, no final '/'."""
    parts = urlsplit(url.strip())
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    for default in ((":443",) if scheme == "https" else (":80",) if scheme == "http" else ()):
        if netloc.endswith(default):
            netloc = netloc[: -len(default)]
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def _encodable(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (JSON lets a token carry a lone surrogate, which cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthorized(f"claim {name!r} missing or not a finite number")
    return float(value)


class TokenVerifier:
    def __init__(self, clients: Mapping[str, TrustedClient], *, first_use: FirstUseCheck,
                 jwks: JwksCache | None = None, leeway: float = setting_default("AUTH_LEEWAY_SECONDS"),
                 max_lifetime: float = setting_default("AUTH_MAX_TOKEN_LIFETIME"),
                 max_age: float = setting_default("AUTH_MAX_TOKEN_AGE"),
                 clock: Callable[[], float] = time.time):
        self.clients = dict(clients)
        self.first_use = first_use
        self.jwks = jwks or JwksCache()
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.max_age = max_age
        self.clock = clock

    def verify(self, authorization: str | None, audience: str | Sequence[str], *,
               first_use: FirstUseCheck | None = None) -> ClientIdentity:
        """Check an ``Authorization`` header value for a call to the endpoint at URL ``audience`` (or at any
        of several URLs: the names the service is configured to answer to). ``first_use``: this
        call's first-use check of the token id instead of the verifier's own (the last check, made only
        when every other passed)."""
        token = self._bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token ({type(exc).__name__})") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise Unauthorized(f"algorithm {str(alg)[:20]!r} is not accepted")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("header 'kid' missing")
        if str(header.get("typ", "")).upper() != "JWT":
            raise Unauthorized("header 'typ' is not 'JWT'")
        iss = unverified.get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise Unauthorized(f"issuer {str(iss)[:200]!r} is not a trusted client")
        key = self._key(client, kid, alg, header.get("jku"))
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], options={
                "verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False,
                "verify_iss": False, "require": []})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"signature check failed ({type(exc).__name__}) for issuer {iss!r}") from exc
        return self._check_claims(claims, client.iss, kid, audience, first_use or self.first_use)

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization header is not 'Bearer <token>'")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
        return token

    def _key(self, client: TrustedClient, kid: str, alg: str, jku: Any) -> VerificationKey:
        """Pinned keys first (no fetch); a registered ``jku`` is fetched only for a ``kid`` not pinned."""
        if jku is not None and (not isinstance(jku, str) or jku not in client.jku):
            raise Unauthorized(f"jku {str(jku)[:200]!r} is not registered for issuer {client.iss!r}")
        key = client.keys.get(kid)
        if key is None:
            for url in (jku,) if jku is not None else client.jku:
                key = self.jwks.find(url, kid)
                if key is not None:
                    break
        if key is None:
            raise Unauthorized(f"no key {kid[:100]!r} for issuer {client.iss!r}")
        if not key.fits(alg):
            raise Unauthorized(f"key {kid!r} of issuer {client.iss!r} does not fit algorithm {alg}")
        return key

    def _check_claims(self, claims: Mapping[str, Any], iss: str, kid: str,
                      audience: str | Sequence[str], first_use: FirstUseCheck) -> ClientIdentity:
        now = self.clock()
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if exp <= now - self.leeway:
            raise Unauthorized(f"token of issuer {iss!r} expired")
        if iat > now + self.leeway:
            raise Unauthorized(f"token of issuer {iss!r} issued in the future")
        if "nbf" in claims and _number(claims, "nbf") > now + self.leeway:
            raise Unauthorized(f"token of issuer {iss!r} not valid yet (nbf)")
        if now - iat > self.max_age + self.leeway:
            raise Unauthorized(f"token of issuer {iss!r} was issued {now - iat:.0f} s ago, more than "
                               f"{self.max_age:.0f} s (its own iat, whatever its exp)")
        if exp - now > self.max_lifetime:
            raise Unauthorized(f"token of issuer {iss!r} lives longer than {self.max_lifetime:.0f} s")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        accepted = [audience] if isinstance(audience, str) else list(audience)
        wanted = {normalize_url(a) for a in accepted}
        if not any(isinstance(a, str) and normalize_url(a) in wanted for a in auds):
            raise Unauthorized(f"token of issuer {iss!r} is for another audience, not "
                               f"{' or '.join(accepted)}")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS or not _encodable(jti):
            raise Unauthorized(f"token of issuer {iss!r} has no usable 'jti'")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise Unauthorized(f"token of issuer {iss!r}: 'tenant' is not a string")
        expires_at = dt.datetime.fromtimestamp(exp + self.leeway, dt.UTC)
        if not first_use(iss, jti, expires_at):
            raise TokenReplayed(iss)
        return ClientIdentity(iss=iss, kid=kid, jti=jti, tenant=tenant, expires_at=expires_at)

"""Which CDS clients the service trusts, and the public keys their tokens are checked with.

The file named by ``CDS_TRUSTED_CLIENTS``::

    {"clients": [
        {"iss": "https://ehr.example.org", "jwks": {"keys": [...]}},              keys given out of band
        {"iss": "https://other.example.org", "jku": ["https://other.example.org/jwks.json"]}
    ]}

A client may have both. A token's ``jku`` header must be one of the URLs registered for its ``iss``;
key sets are fetched from those URLs only (never from a URL a request names on its own), with a
deadline, no redirects and a size limit, and cached for a bounded time (``JwksCache``). A pinned key
(``jwks``) whose ``kid`` matches is used without any fetch, even when the token names a ``jku``.

Only asymmetric keys are taken: EC (P-256, P-384, P-521) and RSA of at least 2048 bits. A private key
found in a key set is reduced to its public half.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from cds.deadline import Deadline, deadline_session
from cds.errors import ConfigurationError, Unauthorized
from cds.settings import default as setting_default

log = logging.getLogger("cds.auth")

#: algorithm -> (key type, curve); nothing symmetric, never "none"
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
}
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the key's own "alg", when its JWK declares one
    key: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        kty, crv = ALGORITHMS[alg]
        return self.kty == kty and (crv is None or self.crv == crv) and (self.alg is None or self.alg == alg)


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    jku: tuple[str, ...] = ()


def public_key_of(jwk: Mapping[str, Any]) -> VerificationKey:
    """One JWK as a verification key; raises ``ValueError`` saying why it cannot be one."""
    kty, kid = jwk.get("kty"), jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("a key without a 'kid' cannot be matched to a token")
    if kty not in {"EC", "RSA"}:
        raise ValueError(f"key {kid!r}: key type {kty!r} is not an asymmetric signing key (EC or RSA)")
    if jwk.get("use") not in (None, "sig"):
        raise ValueError(f"key {kid!r}: 'use' is {jwk.get('use')!r}, not 'sig'")
    alg = jwk.get("alg")
    if alg is not None and alg not in ALGORITHMS:
        raise ValueError(f"key {kid!r}: algorithm {alg!r} is not accepted")
    try:
        key = (ECAlgorithm if kty == "EC" else RSAAlgorithm).from_jwk(dict(jwk))
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"key {kid!r}: not a valid {kty} JWK ({exc})") from exc
    if isinstance(key, EllipticCurvePrivateKey | RSAPrivateKey):
        key = key.public_key()
    if kty == "RSA" and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"key {kid!r}: RSA key of {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    return VerificationKey(kid=kid, kty=kty, crv=jwk.get("crv") if kty == "EC" else None, alg=alg, key=key)


def keys_of(jwks: Any, *, where: str, strict: bool) -> dict[str, VerificationKey]:
    """The usable keys of a JWK Set by ``kid``. ``strict``: a bad key is an error, else it is skipped."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{where}: a JWK Set must be an object with a 'keys' list")
    if len(jwks["keys"]) > MAX_KEYS:
        raise ValueError(f"{where}: more than {MAX_KEYS} keys")
    out: dict[str, VerificationKey] = {}
    for index, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, Mapping):
            raise ValueError(f"{where}.keys[{index}]: expected a JWK object")
        ops = jwk.get("key_ops")
        if isinstance(ops, list) and ops and "verify" not in ops and "sign" not in ops:
            continue
        try:
            key = public_key_of(jwk)
        except ValueError as exc:
            if strict:
                raise ValueError(f"{where}.keys[{index}]: {exc}") from exc
            log.warning("%s.keys[%d] ignored: %s", where, index, exc)
            continue
        known = out.get(key.kid)
        if known is not None and known.key.public_numbers() != key.key.public_numbers():
            raise ValueError(f"{where}: two different keys share the kid {key.kid!r}")
        out.setdefault(key.kid, key)
    return out


def parse_trusted_clients(data: Any, *, where: str) -> dict[str, TrustedClient]:
    if not isinstance(data, Mapping) or not isinstance(data.get("clients"), list):
        raise ConfigurationError(f"{where}: expected an object with a 'clients' list")
    clients: dict[str, TrustedClient] = {}
    for index, entry in enumerate(data["clients"]):
        here = f"{where}: clients[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
            raise ConfigurationError(f"{here}: each client needs an 'iss' string")
        iss = entry["iss"]
        if iss in clients:
            raise ConfigurationError(f"{here}: issuer {iss!r} is listed twice")
        jku = entry.get("jku", [])
        if isinstance(jku, str):
            jku = [jku]
        if not isinstance(jku, list) or not all(isinstance(u, str) and u.startswith(("https://", "http://"))
                                                for u in jku):
            raise ConfigurationError(f"{here}: 'jku' must be a list of http(s) URLs")
        try:
            keys = keys_of(entry["jwks"], where=f"{here}.jwks", strict=True) if "jwks" in entry else {}
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        if not keys and not jku:
            raise ConfigurationError(f"{here}: issuer {iss!r} has neither 'jwks' keys nor 'jku' URLs")
        clients[iss] = TrustedClient(iss=iss, keys=keys, jku=tuple(jku))
    return clients


def load_trusted_clients(path: str | Path) -> dict[str, TrustedClient]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"trusted clients file {path}: cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigurationError(f"trusted clients file {path}: not valid JSON ({exc})") from exc
    return parse_trusted_clients(data, where=str(path))


@dataclass
class _Entry:
    keys: dict[str, VerificationKey] | None = None  # the last set fetched, if any
    fetched_at: float = 0.0
    error: str | None = None  # why the last fetch failed, while it is being backed off
    failed_at: float = 0.0
    failures: int = 0  # failed fetches in a row


class JwksCache:
    """Key sets fetched from registered ``jku`` URLs, each kept ``ttl`` seconds.

    ``find(url, kid)`` fetches only when it must: the set is not cached or has expired, or it lacks
    ``kid`` (the client may have rotated its keys) — then at most once per ``min_refresh`` seconds per
    URL, so tokens with made-up ``kid`` values cannot make the service hammer a client's key server.
    A failed fetch is remembered too: the URL is not asked again for ``min_refresh`` seconds, doubled for
    each further failure up to ``max_backoff``, and every token for it meanwhile fails at once.

    Each URL has its own lock, so a key server that hangs holds up only the tokens naming that URL (a
    waiting caller gives up after ``timeout``), and one fetch has one deadline of ``timeout`` seconds from
    connect to last byte (``cds.deadline``).
    """

    def __init__(self, *, session: requests.Session | None = None,
                 ttl: float = setting_default("JWKS_CACHE_SECONDS"),
                 timeout: float = setting_default("JWKS_TIMEOUT_SECONDS"),
                 min_refresh: float = 10.0, max_backoff: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.session = session or deadline_session()
        self.ttl = ttl
        self.timeout = timeout
        self.min_refresh = min_refresh
        self.max_backoff = max_backoff
        self.clock = clock
        self.fetches: Counter[str] = Counter()  # fetch attempts by URL
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, url: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(url, threading.Lock())

    def _backoff(self, failures: int) -> float:
        return min(self.min_refresh * 2 ** max(failures - 1, 0), self.max_backoff)

    def _cached(self, entry: _Entry | None, kid: str, now: float) -> tuple[bool, VerificationKey | None]:
        """(answered, key): whether the cache answers without a fetch, and with which key."""
        if entry is None:
            return False, None
        fresh = entry.keys is not None and now - entry.fetched_at < self.ttl
        if fresh and kid in entry.keys:  # type: ignore[operator]
            return True, entry.keys[kid]  # type: ignore[index]
        if entry.error is not None and now - entry.failed_at < self._backoff(entry.failures):
            if fresh:
                return True, None
            raise Unauthorized(f"{entry.error} (not asked again for "
                               f"{self._backoff(entry.failures) - (now - entry.failed_at):.0f} s)")
        if fresh and now - entry.fetched_at < self.min_refresh:
            return True, None  # kid unknown, but the set was fetched only just now
        return False, None

    def find(self, url: str, kid: str) -> VerificationKey | None:
        """The key ``kid`` of the set at ``url`` (``None`` when the set has no such key)."""
        answered, key = self._cached(self._entries.get(url), kid, self.clock())
        if answered:
            return key
        lock = self._lock(url)
        if not lock.acquire(timeout=self.timeout):
            raise Unauthorized(f"JWK Set {url} is still being fetched by another call")
        try:
            entry = self._entries.get(url)
            now = self.clock()
            answered, key = self._cached(entry, kid, now)  # another call may have fetched it meanwhile
            if answered:
                return key
            entry = entry or _Entry()
            try:
                keys = self._fetch(url)
            except Unauthorized as exc:
                entry.error, entry.failed_at, entry.failures = exc.message, self.clock(), entry.failures + 1
                self._entries[url] = entry
                raise
            self._entries[url] = _Entry(keys=keys, fetched_at=self.clock())
            return keys.get(kid)
        finally:
            lock.release()

    def _fetch(self, url: str) -> dict[str, VerificationKey]:
        self.fetches[url] += 1
        with Deadline(self.timeout) as deadline:
            try:
                with self.session.get(url, timeout=(self.timeout, self.timeout), allow_redirects=False,
                                      stream=True, headers={"Accept": "application/json"}) as resp:
                    if resp.status_code != 200:
                        raise Unauthorized(f"JWK Set {url} answered HTTP {resp.status_code}")
                    raw = b""
                    for chunk in resp.iter_content(16384):
                        raw += chunk
                        if len(raw) > MAX_JWKS_BYTES or deadline.remaining() <= 0:
                            break
            except requests.RequestException as exc:
                why = "deadline passed" if deadline.expired else type(exc).__name__
                raise Unauthorized(f"JWK Set {url} could not be fetched ({why})") from exc
        if deadline.expired:
            raise Unauthorized(f"JWK Set {url} was not fetched within {self.timeout:g} s")
        if len(raw) > MAX_JWKS_BYTES:
            raise Unauthorized(f"JWK Set {url} is larger than {MAX_JWKS_BYTES} bytes")
        try:
            return keys_of(json.loads(raw), where=f"JWK Set {url}", strict=False)
        except ValueError as exc:
            raise Unauthorized(f"JWK Set {url} is not usable: {exc}") from exc

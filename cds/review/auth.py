"""Auditor authentication, separate from the CDS clients' JWTs.

``AUDITOR_TOKENS`` lists ``name:sha256hex`` pairs: each auditor holds a random token and the service keeps
only its SHA-256 (``cds audit token NAME`` makes one). A request authenticates with either
``Authorization: Bearer <token>`` (API, scripts) or HTTP Basic ``name:token`` (a browser's own prompt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from cds.errors import ConfigurationError

HEX64 = re.compile(r"^[0-9a-f]{64}$")
REALM = 'Basic realm="CDS audit", charset="UTF-8"'


def parse_tokens(entries: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, digest = entry.partition(":")
        digest = digest.strip().lower()
        if not sep or not name.strip() or not HEX64.match(digest):
            raise ConfigurationError(
                "setting CDS_AUDITOR_TOKENS: each entry must be name:<sha256 hex of the token>"
                f" (the entry for {name.strip()!r} is not)"
            )
        out[name.strip()] = digest
    return out


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(name: str) -> tuple[str, str]:
    """A fresh token and its ``AUDITOR_TOKENS`` entry."""
    token = secrets.token_urlsafe(32)
    return token, f"{name}:{digest(token)}"


def authenticate(header: str | None, tokens: dict[str, str]) -> str | None:
    """The auditor's name, or None when the header does not carry a valid credential."""
    if not header or not tokens:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        given = digest(value)
        found = None
        for name, expected in tokens.items():
            if hmac.compare_digest(given, expected):
                found = name
        return found
    if scheme.lower() == "basic" and value:
        try:
            name, sep, token = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        wanted = tokens.get(name)
        ok = hmac.compare_digest(digest(token), wanted or "0" * 64)
        return name if sep and wanted and ok else None
    return None

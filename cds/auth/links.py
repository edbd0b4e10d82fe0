"""Card-scoped, expiring capabilities for the clinician's "Why this card?" link. Pure code.

A link token is ``<card uuid>.<expiry, Unix seconds>.<signature>``, the signature an HMAC-SHA256 (with the
server's link secret, ``CDS_LINK_SECRET``) over the card uuid and the expiry. It opens that one card's page
until it expires and nothing else: no login, because the clinician opens it from inside the EHR, where no
credential of this service is at hand. The token carries no patient identifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

_TOKEN = re.compile(r"^([0-9a-fA-F-]{36})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class LinkRefused(Exception):
    """The token is malformed, forged or for another card (403), or has expired (410)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.message = message
        self.status = status


def _signature(secret: bytes, card_uuid: str, expires: int) -> str:
    mac = hmac.new(secret, f"why-card\n{card_uuid.lower()}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def sign(secret: bytes, card_uuid: str, lifetime_seconds: float, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + lifetime_seconds)
    return f"{card_uuid}.{expires}.{_signature(secret, card_uuid, expires)}"


def verify(secret: bytes, token: str, *, now: float | None = None) -> str:
    """The card uuid the token opens, or ``LinkRefused``."""
    found = _TOKEN.match(token or "")
    if not found:
        raise LinkRefused("this link is not a valid card link")
    card_uuid, expires, signature = found.group(1), int(found.group(2)), found.group(3)
    if not hmac.compare_digest(signature, _signature(secret, card_uuid, expires)):
        raise LinkRefused("this link is not a valid card link")
    if (time.time() if now is None else now) >= expires:
        raise LinkRefused("this link has expired: open the card again in the EHR for a fresh link", 410)
    return card_uuid


class PageLinker:
    """``(base_url, card_uuid) -> url``: the address of a card's page under ``base_url`` + ``path``, signed
    for that card with ``secret`` and expiring after ``lifetime_seconds`` (the call layer's explanation-link
    builder: plain data, so a call that adds links to its cards calls no layer above its own)."""

    __slots__ = ("secret", "lifetime_seconds", "path")

    def __init__(self, secret: bytes, lifetime_seconds: float, path: str):
        self.secret, self.lifetime_seconds, self.path = secret, lifetime_seconds, path.rstrip("/")

    def __call__(self, base_url: str, card_uuid: str) -> str:
        return f"{base_url}{self.path}/{sign(self.secret, card_uuid, self.lifetime_seconds)}"


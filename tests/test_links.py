"""Card links: signed for one card, until an expiry; anything else refused."""

from __future__ import annotations

import uuid

import pytest

from cds.auth.links import LinkRefused, sign, verify

SECRET = b"link-secret-for-tests-0123456789"


def test_a_link_opens_its_card_until_it_expires():
    card = str(uuid.uuid4())
    token = sign(SECRET, card, 60, now=1_000_000)
    assert verify(SECRET, token, now=1_000_059) == card
    with pytest.raises(LinkRefused) as refused:
        verify(SECRET, token, now=1_000_060)
    assert refused.value.status == 410 and "expired" in refused.value.message


@pytest.mark.parametrize("tamper", ["uuid", "expiry", "signature", "secret", "shape"])
def test_a_tampered_link_is_refused(tamper):
    card, other = str(uuid.uuid4()), str(uuid.uuid4())
    token = sign(SECRET, card, 60, now=1_000_000)
    _, expires, signature = token.split(".")
    secret = SECRET
    if tamper == "uuid":
        token = f"{other}.{expires}.{signature}"
    elif tamper == "expiry":
        token = f"{card}.{int(expires) + 3600}.{signature}"
    elif tamper == "signature":
        token = f"{card}.{expires}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
    elif tamper == "secret":
        secret = b"another-secret-entirely-0123456789"
    else:
        token = card
    with pytest.raises(LinkRefused) as refused:
        verify(secret, token, now=1_000_001)
    assert refused.value.status == 403

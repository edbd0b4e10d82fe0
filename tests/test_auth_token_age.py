"""A client token's age is bounded from its own ``iat`` (``CDS_AUTH_MAX_TOKEN_AGE``), not only its remaining
lifetime from now: a token issued 31 years ago with an ``exp`` a minute away was accepted.

Over real HTTP (the app served on a local port) for the reported token, and for the class on the verifier
with an injected clock: every token older than the bound (plus the clock-skew leeway) is refused, whatever
its ``exp``; every token within it is accepted.
"""

from __future__ import annotations

import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from support import PUBLIC_JWKS, TEST_ISS, make_token

from cds.auth.trusted_clients import parse_trusted_clients
from cds.auth.verify import TokenVerifier
from cds.errors import Unauthorized
from cds.web.app import create_app

YEAR = 365.25 * 24 * 3600
DISCOVERY = "http://localhost/cds-services"
CLIENTS = parse_trusted_clients({"clients": [{"iss": TEST_ISS, "jwks": PUBLIC_JWKS}]}, where="test")
NOW = 1_800_000_000.0


def _old_token(aud: str, age: float, *, expires_in: float = 60) -> str:
    now = time.time()
    return make_token(aud, claims={"iat": int(now - age), "exp": int(now + expires_in)})


@pytest.mark.parametrize("age, answered", [(31 * YEAR, 401), (3600, 401), (10, 200)])
def test_a_token_issued_long_ago_is_refused_over_http(auth_config, live_server, age, answered):
    base = live_server(create_app(auth_config))
    url = f"{base}/cds-services"
    response = requests.get(url, headers={"Authorization": f"Bearer {_old_token(url, age)}"}, timeout=60)
    assert response.status_code == answered, response.text
    if answered == 401:
        assert response.content == b""  # a bare 401, as for every bad token


def test_the_bound_is_a_setting(auth_config, live_server):
    base = live_server(create_app({**auth_config, "AUTH_MAX_TOKEN_AGE": 7200}))
    url = f"{base}/cds-services"
    response = requests.get(url, headers={"Authorization": f"Bearer {_old_token(url, 3600)}"}, timeout=60)
    assert response.status_code == 200


def _verifier(max_age: float, leeway: float) -> TokenVerifier:
    return TokenVerifier(CLIENTS, first_use=lambda *_: True, leeway=leeway, max_age=max_age,
                         clock=lambda: NOW)


@settings(max_examples=60, deadline=None)
@given(max_age=st.integers(1, 3600), leeway=st.integers(0, 120), beyond=st.integers(1, int(40 * YEAR)),
       expires_in=st.integers(1, 3000))
def test_every_token_older_than_the_bound_is_refused_whatever_its_exp(max_age, leeway, beyond, expires_in):
    iat = NOW - max_age - leeway - beyond
    token = make_token(DISCOVERY, claims={"iat": iat, "exp": NOW + expires_in})
    with pytest.raises(Unauthorized, match="was issued"):
        _verifier(max_age, leeway).verify(f"Bearer {token}", DISCOVERY)


@settings(max_examples=60, deadline=None)
@given(max_age=st.integers(1, 3600), leeway=st.integers(0, 120), fraction=st.floats(0, 1),
       expires_in=st.integers(1, 3000))
def test_every_token_within_the_bound_is_accepted(max_age, leeway, fraction, expires_in):
    iat = NOW - (max_age + leeway) * fraction
    token = make_token(DISCOVERY, claims={"iat": iat, "exp": NOW + expires_in})
    identity = _verifier(max_age, leeway).verify(f"Bearer {token}", DISCOVERY)
    assert identity.iss == TEST_ISS

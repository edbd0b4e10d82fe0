"""The configuration and security docs keep up with the settings."""

from __future__ import annotations

import re
from pathlib import Path

from cds.settings import SETTINGS

DOCS = Path(__file__).parent.parent / "docs"


def test_every_setting_is_documented_in_configuration_md():
    text = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `CDS_([A-Z0-9_]+)` \|", text, flags=re.M))
    assert {s.name for s in SETTINGS} <= documented


def test_security_md_names_every_auth_and_limit_setting():
    text = (DOCS / "security.md").read_text()
    for name in ("DEV_MODE", "TRUSTED_CLIENTS", "DEV_CLIENT_DIR", "AUTH_LEEWAY_SECONDS",
                 "AUTH_MAX_TOKEN_LIFETIME", "AUTH_MAX_TOKEN_AGE", "JWKS_CACHE_SECONDS",
                 "JWKS_TIMEOUT_SECONDS", "CORS_ORIGINS",
                 "MAX_BODY_BYTES", "MAX_JSON_DEPTH", "MAX_BUNDLE_ENTRIES", "PUBLIC_URL", "AUDIENCES",
                 "REPLAY_FALLBACK", "REPLAY_FALLBACK_DIR", "REPLAY_REDIS_URL", "REPLAY_REDIS_PREFIX",
                 "REPLAY_REDIS_TIMEOUT_SECONDS", "CALL_BUDGET_SECONDS", "CALL_MAX_RESOURCES",
                 "HEADER_TIMEOUT_SECONDS", "BODY_TIMEOUT_SECONDS", "FHIR_RESPONSE_SECONDS"):
        assert f"CDS_{name}" in text, name

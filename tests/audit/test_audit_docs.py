"""The audit settings are documented, and the documented CLI commands exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.cli import cli
from cds.settings import SETTINGS

DOCS = Path(__file__).resolve().parents[2] / "docs"
AUDIT_SETTINGS = [s for s in SETTINGS if s.name.startswith(("AUDIT", "DATABASE_URL", "PUBLIC_URL"))]


@pytest.mark.parametrize("setting", AUDIT_SETTINGS, ids=lambda s: s.name)
def test_audit_setting_is_documented(setting):
    assert f"`{setting.env}`" in (DOCS / "configuration.md").read_text()


@pytest.mark.parametrize(
    "command", ["migrate", "list", "show", "verify", "export", "rerun", "drain", "token", "patient-key"]
)
def test_audit_commands_are_documented_and_exist(command):
    assert f"cds audit {command}" in (DOCS / "audit.md").read_text()
    assert command in cli.commands["audit"].commands

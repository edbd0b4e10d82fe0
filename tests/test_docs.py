"""The docs keep step with the code: every setting documented, every documented setting real."""

from __future__ import annotations

import re
from pathlib import Path

from cds.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in doc]
    assert not missing, f"settings not in docs/configuration.md: {missing}"


def test_every_documented_setting_exists():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(CDS_[A-Z0-9_]+)`", doc))
    assert documented <= {s.env for s in SETTINGS}, documented - {s.env for s in SETTINGS}


def test_every_setting_has_help():
    assert all(s.help.strip() for s in SETTINGS)


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```", 2)[1]
    assert "./run.sh serve" in block and "./run.sh test" in block
    assert "./run.sh test" in (ROOT / ".ci" / "run").read_text()

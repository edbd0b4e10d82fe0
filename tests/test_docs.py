"""The documentation keeps up with the code: every setting is in docs/configuration.md with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds.settings import SETTINGS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _cells() -> dict[str, list[str]]:
    """Each documented variable's cells after its name: default, accepts, meaning."""
    text = (DOCS / "configuration.md").read_text()
    return {m.group(1): [c.strip() for c in m.group(2).split(" | ")]
            for m in re.finditer(r"^\| `(CDS_[A-Z0-9_]+)` \| (.*) \|$", text, re.M)}


def _rows() -> dict[str, str]:
    return {name: cells[0] for name, cells in _cells().items()}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented_with_its_default(setting):
    rows = _rows()
    assert setting.env in rows, f"{setting.env} is missing from docs/configuration.md"
    if isinstance(setting.default, bool):
        default = str(setting.default).lower()
    elif isinstance(setting.default, tuple):
        default = ", ".join(setting.default)
    else:
        default = str(setting.default)
    assert rows[setting.env].strip() == (f"`{default}`" if default else "(empty)")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented_with_what_it_accepts(setting):
    """The "accepts" column is the declaration's own wording (``Setting.accepts``), so it cannot drift."""
    cells = _cells()[setting.env]
    assert len(cells) == 3, f"{setting.env}: the row needs 4 columns (variable | default | accepts | meaning)"
    assert cells[1] == setting.accepts, f"{setting.env}: the accepts column should read: {setting.accepts}"


def test_no_documented_setting_is_unknown():
    assert set(_rows()) <= {s.env for s in SETTINGS}


def test_every_setting_has_help():
    assert all(s.help.strip() for s in SETTINGS)


def test_readme_opens_with_the_two_commands():
    root = DOCS.parent
    readme = (root / "README.md").read_text()
    block = readme.split("```", 2)[1]
    assert "./run.sh serve" in block and "./run.sh test" in block
    assert "./run.sh test" in (root / ".ci" / "run").read_text()


def test_the_readme_curl_example_gives_the_cards_it_promises(client):
    import json
    import re

    readme = (DOCS.parent / "README.md").read_text()
    body = json.loads(re.search(r"-d '(\{\"hook\":\"patient-view\".*?)' \|", readme, re.S).group(1))
    response = client.post("/cds-services/bone-health-patient-view", json=body)
    assert response.status_code == 200
    rules = sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])
    assert rules == ["calcium-monitoring-due", "dxa-baseline-missing", "estradiol-monitoring-due",
                     "vitamin-d-missing"]
    for promise in ("no 25-OH vitamin D", "no calcium result", "no baseline DXA", "estradiol monitoring due"):
        assert promise in readme

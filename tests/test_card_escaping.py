"""Text taken from FHIR data reaches card text escaped for Markdown and HTML, over real HTTP.

A laboratory system's unit string or text result is data, not markup: rendered by a stock CommonMark
renderer with raw HTML on (the most permissive an EHR could be), the card must show the text and contain
no tag, link, image or emphasis made from it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests
from markdown_it import MarkdownIt
from support import NOW, SERVICE, make_test_app, make_token

from cds.hooks.services import prefetch_templates
from cds.rules.templating import escape_text
from cds.toolkit.offline import hook_request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import build_fixtures as fx  # noqa: E402

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "*bold* and __strong__",
    "<script>alert(1)</script>",
    "![i](https://evil.example/p.png)",
    "`code` ~~gone~~ | cell",
    "https://evil.example/phish",
]
LIVE_MARKUP = ("<img", "<a ", "<a>", "<em>", "<strong>", "<script", "<code>", "<del>", "<s>")
RENDER = MarkdownIt("commonmark", {"html": True})


def _post(base: str, body: dict) -> dict:
    """POST a hook call, retrying every kind of request error until a generous deadline."""
    url = f"{base}/cds-services/{SERVICE[body['hook']]}"
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = requests.post(
                url, json=body, timeout=30, headers={"Authorization": f"Bearer {make_token(url)}"}
            )
            assert answer.status_code == 200, answer.text[:300]
            return answer.json()
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def app():
    return make_test_app({"NOW": NOW})


def _bundle(*resources: dict) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


def _texts(cards: list[dict]) -> list[str]:
    out = []
    for card in cards:
        out += [card["summary"], card["detail"]]
        out += [s["label"] for s in card.get("suggestions", [])]
        out += [a["description"] for s in card.get("suggestions", []) for a in s["actions"]]
    return out


def _assert_inert(cards: list[dict], hostile: str) -> None:
    gaps = next(c for c in cards if c["source"]["topic"]["code"] == "evaluation-gaps")
    assert escape_text(hostile) in gaps["detail"], gaps["detail"]
    for text in _texts(cards):
        html = RENDER.render(text.split("\n\nRule `")[0])  # the card's own source link ends the detail
        for markup in LIVE_MARKUP:
            assert markup not in html, (hostile, markup, html)
        assert 'href="' not in html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_unit_in_value_quantity_is_inert_text(app, live_server, hostile):
    vitd = fx.vitamin_d(12, hostile, code_unit=None)
    body = hook_request(
        _bundle(
            fx.patient(),
            fx.anastrozole(),
            vitd,
            fx.estradiol(32),
            fx.dxa("d", "lumbar_spine", "t_score", -0.4, 200),
        ),
        "patient-view",
        templates=prefetch_templates(app.extensions["cds.pack"]),
    )
    cards = _post(live_server(app), body)["cards"]
    _assert_inert(cards, hostile)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_value_string_is_inert_text(app, live_server, hostile):
    e2 = fx.estradiol(None, value_string=f"<5 {hostile}")
    body = hook_request(
        _bundle(
            fx.patient(),
            fx.anastrozole(started=fx.LONG_COURSE),  # the yearly card (its notes say what was set aside)
            e2,
            fx.vitamin_d(38),
            fx.dxa("d", "lumbar_spine", "t_score", -0.4, 200),
        ),
        "patient-view",
        templates=prefetch_templates(app.extensions["cds.pack"]),
    )
    cards = _post(live_server(app), body)["cards"]
    _assert_inert(cards, hostile)
    due = next(c for c in cards if c["source"]["topic"]["code"] == "estradiol-monitoring-due")
    assert "set aside" in due["detail"]


def test_a_limit_is_quoted_as_reported_and_renders_as_text(app, live_server):
    body = hook_request(
        _bundle(
            fx.patient(), fx.anastrozole(), fx.estradiol(None, value_string="<5 pg/mL"), fx.vitamin_d(38)
        ),
        "patient-view",
        templates=prefetch_templates(app.extensions["cds.pack"]),
    )
    cards = _post(live_server(app), body)["cards"]
    low = next(c for c in cards if c["source"]["topic"]["code"] == "low-estradiol-on-ai")
    assert low["indicator"] == "critical" and "(<5 pg/mL)" in low["summary"]
    assert "5.0" not in low["summary"] + low["detail"]
    assert "&lt;5 pg/mL" in RENDER.render(low["detail"])  # the comparator shows, as text


def test_escape_text_leaves_ordinary_values_as_written():
    for plain in (
        "<5 pg/mL",
        "<= 20 ng/mL",
        "> 150 ng/mL",
        "Femoral neck",
        "12.0 ng/mL",
        "g/cm2",
        "T-score -2.5",
    ):
        assert escape_text(plain) == plain
    assert escape_text("a\nb\r\n# c") == "a b # c"

"""The clinician's "Why this card?" page as the EHR shows a card, and its chart, against the real service on
a local port: the card's Markdown rendered (bold, clickable links, no raw ``**``) with HTML from FHIR data
shown as text, in a real browser; the chart's time axis fitted to the results; FHIR text drawn as plain
text (no mathematics markup); a long record drawn at a bounded cost, with the page saying what was left
out; one render per card, kept."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from clinician_support import _obs, record, sloppy_draft
from support import make_token, serve_at
from werkzeug.serving import make_server

from cds.clinician import chart
from cds.hooks.services import discovery_document
from cds.rules import pack as rule_pack
from cds.toolkit.request import as_bundle, build_hook_request

SERVICE = "bone-health-order-select"
DEADLINE = 120.0
HOSTILE = "<b>spine</b><img src=x onerror=alert(1)>"  # within the length a site name is quoted at
LATEX = r"$\frac{1}{$"


@pytest.fixture
def served(make_app, tmp_path):
    """``served(**settings)`` -> (base URL, app) of a real server on a free local port."""
    servers = []

    def start(**settings: Any):
        app = make_app(f"sqlite:///{tmp_path}/db{len(servers)}/audit.sqlite3", **settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        base = f"http://127.0.0.1:{server.server_port}"
        serve_at(app, base)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return base, app

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
        server.server_close()


def _request(resources: list[dict]) -> dict:
    service = next(s for s in discovery_document(rule_pack.load())["services"] if s["hook"] == "order-select")
    return build_hook_request(as_bundle([*resources, sloppy_draft()]), "order-select", service)


def _cards(base: str, resources: list[dict]) -> list[dict]:
    url = f"{base}/cds-services/{SERVICE}"
    res = requests.post(
        url,
        json=_request(resources),
        timeout=DEADLINE,
        headers={"Authorization": "Bearer " + make_token(url)},
    )
    assert res.status_code == 200, res.text
    return res.json()["cards"]


def _get(url: str) -> requests.Response:
    """GET until 200 (the audit record is written just after the answer), up to a generous deadline."""
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=DEADLINE)
            if last.status_code == 200:
                return last
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert last is not None, f"{url} never answered"
    return last


def _why(card: dict) -> str:
    return next(link["url"] for link in card.get("links", []) if link["label"] == "Why this card?")


def _card(cards: list[dict], rule: str) -> dict:
    found = [c for c in cards if c["source"]["topic"]["code"] == rule]
    assert found, f"no {rule} card in {[c['source']['topic']['code'] for c in cards]}"
    return found[0]


def _with_site(resources: list[dict], text: str) -> list[dict]:
    """The record with the lumbar-spine DXA results at a site named only by ``text`` (as FHIR data sends)."""
    for r in resources:
        if str(r.get("id", "")).startswith("lumbar-spine-"):
            r["bodySite"] = {"text": text}
    return resources


def test_the_page_renders_the_card_markdown_as_the_ehr_does(browser, served):
    base, _ = served()
    cards = _cards(base, _with_site(record(), HOSTILE))
    card = _card(cards, "low-estradiol-with-bone-loss")
    assert "**" in card["detail"] and "](https://" in card["detail"]  # Markdown, as the EHR received it
    link = _why(card)
    _get(link)
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(link)
    detail = page.locator("#detail")
    shown = detail.inner_text()
    assert detail.locator("strong").count() >= 1 and "**" not in shown  # bold, not asterisks
    citation = detail.locator('a[href^="https://doi.org/"]')
    assert citation.count() >= 1 and "](" not in shown
    citation.first.click(trial=True)  # visible, enabled and on top: a clinician can click it
    assert citation.first.get_attribute("rel") == "noreferrer noopener"
    # the site's HTML from FHIR data is text on the page, never an element
    assert "<img src=x" in shown and "<b>spine</b>" in shown
    assert detail.locator("img").count() == 0 and detail.locator("b").count() == 0
    assert dialogs == []
    context.close()


def test_the_chart_time_axis_covers_a_single_result(served):
    base, _ = served()
    day = (dt.date.today() - dt.timedelta(days=20)).isoformat()
    resources = [r for r in record() if r["resourceType"] == "Patient"]
    resources.append(_obs("e2-only", "2243-4", day, 12.0, "pg/mL"))
    card = _card(_cards(base, resources), "low-estradiol-on-ai")
    svg = _get(_why(card) + "/chart.svg").text
    ticks = [dt.date.fromisoformat(t) for t in re.findall(r"<!-- (\d{4}-\d{2}-\d{2}) -->", svg)]
    assert ticks, "the time axis has no dated ticks"
    result = dt.date.fromisoformat(day)
    assert all(abs((t - result).days) <= 60 for t in ticks), f"axis {min(ticks)} to {max(ticks)} for {day}"


def test_fhir_text_in_the_chart_is_plain_text(served):
    base, _ = served()
    card = _card(_cards(base, _with_site(record(), LATEX)), "low-estradiol-with-bone-loss")
    answer = _get(_why(card) + "/chart.svg")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/svg+xml")
    assert r"\frac{1}{" in answer.text  # drawn as written


def _long_record(count: int) -> list[dict]:
    """A man on anastrozole with ``count`` daily lumbar-spine T-scores, falling into osteopenia."""
    start = dt.date.today() - dt.timedelta(days=count + 10)
    out = [r for r in record() if r["resourceType"] == "Patient" or str(r["id"]).startswith("e2-")]
    for i in range(count):
        day = (start + dt.timedelta(days=i)).isoformat()
        out.append(_obs(f"t-{i}", "38267-1", day, round(-0.5 - 1.5 * i / count, 2), "{T-score}"))
    return out


def test_a_long_record_draws_a_bounded_chart_and_says_so(served):
    base, _ = served()
    count = 1500
    card = _card(_cards(base, _long_record(count)), "osteopenia-on-ai")
    link = _why(card)
    page = _get(link).text
    assert f"{chart.MAX_POINTS} of {count} results drawn" in page
    answer = _get(link + "/chart.svg")
    assert answer.status_code == 200, answer.text[:300]
    points = answer.text.count('id="data-point"')
    assert (
        0 < points <= chart.MAX_POINTS + len(record())
    )  # the spine thinned; the estradiol results as they are


def test_a_chart_is_drawn_once_per_card_and_kept(served):
    base, app = served()
    card = _card(_cards(base, record()), "low-estradiol-with-bone-loss")
    link = _why(card)
    _get(link)
    with ThreadPoolExecutor(max_workers=3) as pool:  # three asks at once, as a refreshing page would send
        answers = list(pool.map(lambda _: _get(link + "/chart.svg"), range(3)))
    assert all(a.status_code == 200 for a in answers)
    assert len({a.text for a in answers}) == 1
    _get(link + "/chart.svg")
    assert app.extensions["cds.chart_cache"].renders == 1


def test_the_chart_cache_is_bounded_in_bytes():
    cache = chart.SvgCache(max_bytes=1000)
    for i in range(20):
        assert cache.get(f"card-{i}", lambda i=i: "x" * 300 + str(i)).endswith(str(i))
    assert sum(len(v) for v in cache._items.values()) <= 1000 and cache.renders == 20
    assert cache.get("huge", lambda: "y" * 5000) == "y" * 5000  # answered, never kept
    assert "huge" not in cache._items


@pytest.mark.parametrize("count, limit", [(1, 5), (5, 5), (6, 5), (1000, 120), (121, 120)])
def test_thinning_keeps_the_first_and_the_latest(count, limit):
    points = [{"date": f"d{i:05d}"} for i in range(count)]
    kept = chart.thinned(points, limit)
    assert len(kept) == min(count, limit) and kept[0] is points[0] and kept[-1] is points[-1]
    assert kept == sorted(kept, key=lambda p: p["date"])


def test_the_time_axis_fits_the_dates():
    day = dt.date(2026, 5, 1)
    low, high = chart.time_axis([day])
    assert low < day < high and (high - low).days <= 62
    low, high = chart.time_axis([day, day + dt.timedelta(days=730)])
    assert low < day and high > day + dt.timedelta(days=730) and (high - low).days < 730 * 1.2

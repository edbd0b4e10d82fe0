"""The auditor pages in a real browser (Debian's chromium driven by Playwright) against the real service
on a local port: search, open a record, read "why this card", read a rule's statistics."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
import yaml
from audit_support import AUDITOR_TOKEN, SERVICE, hook_body
from support import make_token, serve_at
from werkzeug.serving import make_server

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"




@pytest.fixture
def live_service(make_app, tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/db/audit.sqlite3")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    serve_at(app, base)
    try:
        yield base
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_auditor_finds_a_card_and_sees_why(browser, live_service):
    base = live_service
    with requests.Session() as http:
        cards = []
        for body in (hook_body("ann"), hook_body("bob", dxa_drop=True), hook_body("cat", on_ai=False)):
            res = http.post(
                f"{base}/cds-services/{SERVICE}",
                json=body,
                timeout=10,
                headers={"Authorization": "Bearer " + make_token(f"{base}/cds-services/{SERVICE}")},
            )
            assert res.status_code == 200
            cards += res.json()["cards"]
        dxa_card = next(c for c in cards if c["indicator"] == "warning")
        res = http.post(
            f"{base}/cds-services/{SERVICE}/feedback",
            timeout=10,
            headers={"Authorization": "Bearer " + make_token(f"{base}/cds-services/{SERVICE}/feedback")},
            json={
                "feedback": [
                    {
                        "card": dxa_card["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-22T09:00:00Z",
                        "overrideReason": {
                            "reason": {
                                "system": "https://bone-health-cds.example.org/override-reasons",
                                "code": "different-scanner",
                                "display": "Scans from different machines; change not comparable",
                            },
                            "userComment": "GE then Hologic",
                        },
                    }
                ]
            },
        )
        assert res.status_code == 200
        assert http.get(f"{base}/audit/", timeout=10).status_code == 401  # no credentials

    context = browser.new_context(
        http_credentials={"username": "alice", "password": AUDITOR_TOKEN},
        viewport={"width": 1280, "height": 1000},
    )
    page = context.new_page()
    page.goto(f"{base}/audit/")
    assert page.locator("#total").inner_text().startswith("3 record(s)")

    # search: records where a warning card was shown
    page.select_option("select[name=indicator]", "warning")
    page.click("button[type=submit]")
    assert "indicator=warning" in page.url
    assert page.locator("#total").inner_text().startswith("1 record(s)")
    rows = page.locator("#records tbody tr")
    assert rows.count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-search.png"), full_page=True)

    # open the record, then the card's explanation
    rows.first.locator("td").first.locator("a").click()
    assert page.locator("h1").inner_text().startswith("Audit record #2")
    assert "falling-bone-density" in page.locator("body").inner_text()
    page.screenshot(path=str(ARTIFACTS / "audit-record.png"), full_page=True)
    page.locator(f"#card-{dxa_card['uuid']} a", has_text="why this card?").click()
    assert page.url.endswith(f"/audit/cards/{dxa_card['uuid']}")
    # the link the EHR got with the card opens the clinician's page (no login), not this auditor's page
    assert "/why/" in dxa_card["links"][-1]["url"] and page.url != dxa_card["links"][-1]["url"]
    text = page.locator("main").inner_text()
    assert "Why this card?" in text
    assert "falling-bone-density v1.0.0" in text  # the rule and its version
    assert "International Society for Clinical Densitometry" in text  # its citation
    tree = page.locator("ul.explanation").inner_text()
    assert "dxa_change(" in tree and "t_drop=0.4" in tree  # the fact it fired on
    assert "fact built from the EHR's data" in tree
    assert "dxa(" in tree and "t_score=-0.6" in tree  # the scan fact the change shares refs with
    assert "Scans from different machines" in text  # feedback on this card

    page.screenshot(path=str(ARTIFACTS / "audit-why-this-card.png"), full_page=True)

    # a derived fact: the vitamin D card rests on "on_ai", derived from the medication order
    vitd = next(c for c in cards if c["summary"].startswith("No 25-OH vitamin D"))
    page.goto(f"{base}/audit/cards/{vitd['uuid']}")
    assert page.locator("h1").inner_text() == "Why this card?"
    tree = page.locator("ul.explanation").inner_text()
    rule = Path(__file__).resolve().parents[2] / "rules" / "rules" / "on-aromatase-inhibitor.yaml"
    on_ai = yaml.safe_load(rule.read_text())["version"]
    assert "on_ai(" in tree and f"derived fact, from rule on-aromatase-inhibitor v{on_ai}" in tree
    assert "medication(" in tree and "drug_class=aromatase_inhibitor" in tree
    assert "Shapiro CL" in page.locator("main").inner_text()  # the derived rule's citation

    # the rules overview, then one rule's statistics
    page.click("header >> text=Rules")
    overview = page.locator("#rule-stats").inner_text()
    assert "falling-bone-density" in overview and "Scans from different machines" in overview
    page.locator("#rule-stats a", has_text="falling-bone-density").click()
    assert page.locator("h1").inner_text() == "Rule falling-bone-density v1.0.0"
    stats = page.locator("#stats").inner_text()
    assert stats.split("\n")[-1].split("\t") == ["1", "1", "0", "1"]  # fired, shown, accepted, overridden
    assert "different-scanner" in page.locator("#override-reasons").inner_text()
    assert "GE then Hologic" in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "audit-rule-statistics.png"), full_page=True)
    context.close()


def test_auditor_finds_a_call_by_hook_instance_and_patient_key_and_reads_errors_as_pages(
    browser, live_service
):
    base = live_service
    instances = []
    with requests.Session() as http:
        for i in range(28):  # more than one page of 25
            body = hook_body("ann" if i % 2 else f"p{i}")
            instances.append(body["hookInstance"])
            url = f"{base}/cds-services/{SERVICE}"
            token = {"Authorization": "Bearer " + make_token(url)}
            res = http.post(url, json=body, timeout=60, headers=token)
            assert res.status_code == 200
    context = browser.new_context(http_credentials={"username": "alice", "password": AUDITOR_TOKEN},
                                  viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/audit/")
    assert page.locator("#total").inner_text().startswith("28 record(s), showing 1–25 of 28")
    page.locator("a", has_text="older →").click()
    assert page.locator("#total").inner_text().startswith("28 record(s), showing 26–28 of 28")

    # the hookInstance the EHR logged finds its one call
    page.goto(f"{base}/audit/")
    page.fill("input[name=hookInstance]", instances[6])
    page.click("button[type=submit]")
    assert page.locator("#total").inner_text().startswith("1 record(s)")
    assert page.locator("#records tbody tr").count() == 1

    # the short patient key shown finds that patient's calls
    page.goto(f"{base}/audit/")
    short = page.locator("#records tbody tr").first.locator("td.hash").inner_text().strip()
    assert len(short) == 16
    page.fill("input[name=patientKey]", short)
    page.click("button[type=submit]")
    assert page.locator("#total").inner_text().startswith("14 record(s)")  # ann's calls, every other one
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-search-patient-key.png"), full_page=True)

    # errors are pages, not raw JSON: a misspelt filter, a bad date, an unknown rule, an unknown record
    for path, status, says in (("/audit/?indicatr=warning", 400, "unknown filter indicatr"),
                               ("/audit/?until=yesterday", 400, "until must be an ISO date"),
                               ("/audit/rules/vitamin-d-mising", 404, "no rule 'vitamin-d-mising'"),
                               ("/audit/records/999999", 404, "no audit record 999999")):
        answer = page.goto(base + path)
        assert answer.status == status and "text/html" in answer.headers["content-type"], path
        assert says in page.locator("#error").inner_text(), path
    page.screenshot(path=str(ARTIFACTS / "audit-error-page.png"), full_page=True)

    # the rules page: card rules and derived rules apart, with the threshold values in force
    page.goto(f"{base}/audit/rules/")
    cards = page.locator("#rule-stats").inner_text()
    derived = page.locator("#derived-rule-stats").inner_text()
    assert "low-estradiol-on-ai" in cards and "on-aromatase-inhibitor" not in cards
    assert "on-aromatase-inhibitor" in derived and "low-estradiol-on-ai" not in derived
    assert "estradiol_low_pg_ml = 20 pg/mL" in cards
    page.screenshot(path=str(ARTIFACTS / "audit-rules.png"), full_page=True)
    page.goto(f"{base}/audit/rules/low-estradiol-on-ai")
    assert "estradiol_severe_pg_ml" in page.locator("#thresholds").inner_text()
    context.close()

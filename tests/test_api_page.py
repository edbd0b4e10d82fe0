"""The API page (``GET /api-docs``, Swagger UI) in a real browser (Debian's chromium driven by Playwright)
against the real service on a local port, with every request to anywhere but this machine blocked: the
page lists every operation of the OpenAPI document, runs one of them, and breaks none of its own
Content-Security-Policy; the API's own answers keep theirs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from cds import create_app
from cds.web.apidocs import ASSETS, HEADERS, swagger_ui_dist

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOCAL = {"127.0.0.1", "localhost", "::1"}




def operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


@pytest.mark.browser
def test_the_api_page_lists_every_operation_offline_under_its_policy(browser, auth_config, live_server):
    base = live_server(create_app(auth_config))
    doc = requests.get(base + "/openapi.json", timeout=30).json()
    wanted = operations(doc)
    assert ("POST", "/cds-services/{service_id}") in wanted and len(wanted) > 8

    context = browser.new_context()
    outside: list[str] = []
    problems: list[str] = []

    def only_this_machine(route):
        if urlsplit(route.request.url).hostname in LOCAL:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_machine)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        response = page.goto(base + "/api-docs")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == HEADERS["Content-Security-Policy"]
        page.wait_for_selector(".opblock-summary-path", timeout=120_000)
        shown = set()
        for block in page.locator(".opblock").all():
            method = block.locator(".opblock-summary-method").inner_text().strip()
            path = block.locator(".opblock-summary-path").get_attribute("data-path")
            shown.add((method, path))
        assert shown == wanted
        assert page.locator("button.authorize").count() == 1  # the client JWT is pasted here

        # an operation run from the page: the open GET /health, through this service only
        health = page.locator("#operations-Operations-health")
        health.locator(".opblock-summary").click()
        health.locator("button.try-out__btn").click()
        health.locator("button.execute").click()
        status = health.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=60_000)
        assert status.inner_text().strip() == "200"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "api-page.png"), full_page=False)
    finally:
        context.close()
    assert outside == []  # nothing was asked of any other host
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems


def test_the_page_assets_come_from_the_installed_package_and_the_api_keeps_its_headers(client):
    for name in sorted(ASSETS):
        with client.get(f"/api-docs/assets/{name}") as response:
            assert response.status_code == 200, name
            assert response.data == (swagger_ui_dist() / name).read_bytes()
    with client.get("/api-docs/assets/VERSION") as response:
        assert response.get_data(as_text=True).startswith("v5.")
    assert client.get("/api-docs/assets/index.html").status_code == 404  # flask-swagger-ui's inline page
    assert client.get("/api-docs/assets/..%2Fflask_swagger_ui.py").status_code == 404
    # the page's policy is the page's: the API answers as before, its own calls still need a token
    discovery = client.get("/cds-services")
    assert discovery.status_code == 200 and "Content-Security-Policy" not in discovery.headers
    assert "Content-Security-Policy" not in client.get("/openapi.json").headers
    bare = create_app({"DATABASE_URL": "sqlite://", "DEV_MODE": False}).test_client()
    with bare.get("/api-docs") as page:
        assert page.status_code == 200 and page.headers["Content-Security-Policy"]
    assert bare.get("/cds-services").status_code == 401

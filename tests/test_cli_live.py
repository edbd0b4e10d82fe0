"""``cds request`` and ``cds replay`` against a real server on a local port, with signed client JWTs."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from live_server import KEYS, JwtCheck, LiveServer

from cds import create_app
from cds.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"
REALISTIC = ROOT / "fixtures" / "realistic"
ISS = "urn:cds:test-client"
# A server "now" far from the fixtures' date, so every replay below depends on the date shift.
SERVER_DAY = dt.date(2028, 2, 29)


@pytest.fixture
def server(tmp_path):
    now = dt.datetime.combine(SERVER_DAY, dt.time(9, 30), tzinfo=dt.UTC)
    public = [k for k in json.loads(KEYS.read_text())["keys"] if "d" not in k]
    trusted = tmp_path / "trusted-clients.json"
    trusted.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": public}}]}))
    app = create_app({"NOW": now, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "DEV_MODE": False,
                      "TRUSTED_CLIENTS": str(trusted)})
    checked = JwtCheck(app.wsgi_app, ISS)
    app.wsgi_app = checked
    with LiveServer(app) as live:
        live.jwt = checked
        yield live


@pytest.fixture(autouse=True)
def no_dev_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CDS_DEV_CLIENT_DIR", str(tmp_path / "no-dev-client"))


def table(out: str) -> dict[str, str]:
    """The summary table of a replay: ``{"passed": "14", "latency p50": "6 ms", ...}``."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, value = line.strip().rpartition("  ")
            rows[name.strip()] = value.strip()
    return rows


def cli(*args: str) -> list[str]:
    return [*args, "--key", str(KEYS), "--iss", ISS, "--server-date", SERVER_DAY.isoformat()]


def test_replay_of_the_scenarios_passes(server, capsys):
    code = main(cli("replay", str(SCENARIOS), "--url", server.url, "--strict"))
    out = capsys.readouterr().out
    assert code == 0, out
    fixtures = len(list(SCENARIOS.glob("*.expected.json")))
    assert fixtures >= 12
    rows = table(out)
    assert rows["fixtures"] == rows["passed"] == str(fixtures)
    assert rows["failed"] == rows["errored"] == "0"
    assert rows["latency p50"].endswith(" ms") and rows["latency p99"].endswith(" ms")
    assert server.jwt.checked == fixtures + 1  # discovery, then one signed call per fixture, each jti new


def test_replay_of_the_realistic_corpus_passes(server, capsys):
    """Synthea transaction bundles, US Core profiles and sandbox draft orders, through a live server."""
    code = main(cli("replay", str(REALISTIC), "--url", server.url, "--strict"))
    out = capsys.readouterr().out
    assert code == 0, out
    fixtures = len(list(REALISTIC.glob("*.expected.json")))
    assert fixtures >= 7
    rows = table(out)
    assert rows["fixtures"] == rows["passed"] == str(fixtures)
    assert rows["failed"] == rows["errored"] == "0"


def test_replay_without_the_date_shift_fails_on_a_later_day(server, capsys):
    code = main(cli("replay", str(SCENARIOS), "--url", server.url, "--no-shift"))
    out = capsys.readouterr().out
    assert code == 1
    # 2028: every vitamin D result of 2026 is now too old, so cards appear that the sidecars rule out
    assert "FAILED: trt-man-anastrozole-low-estradiol.json" in out
    assert "+ unexpected vitamin-d-missing" in out


def test_replay_reports_a_wrong_expectation_with_a_diff(server, tmp_path, capsys):
    folder = tmp_path / "mine" / "nested"
    folder.mkdir(parents=True)
    for name in ("trt-man-anastrozole-low-estradiol", "patient-with-no-data"):
        shutil.copy(SCENARIOS / f"{name}.json", folder / f"{name}.json")
        shutil.copy(SCENARIOS / f"{name}.expected.json", folder / f"{name}.expected.json")
    sidecar = folder / "trt-man-anastrozole-low-estradiol.expected.json"
    expected = json.loads(sidecar.read_text())
    next(c for c in expected["cards"] if c["rule"] == "low-estradiol-on-ai")["indicator"] = "critical"
    sidecar.write_text(json.dumps(expected))
    (folder / "notes.json").write_text("{}")  # no sidecar: not a fixture, ignored

    code = main(cli("replay", str(tmp_path / "mine"), "--url", server.url, "--progress"))
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "FAILED: nested/trt-man-anastrozole-low-estradiol.json" in captured.out
    assert (
        "- expected low-estradiol-on-ai [critical] summary containing 'Low estradiol (14.2 pg/mL)'"
        in captured.out
    )
    assert "+ answered low-estradiol-on-ai [warning] 'Low estradiol (14.2 pg/mL)" in captured.out
    assert "patient-with-no-data" not in captured.out
    rows = table(captured.out)
    assert (rows["passed"], rows["failed"], rows["errored"]) == ("1", "1", "0")
    assert "2/2 failed 1 errored 0" in captured.err  # the progress bar


def test_replay_json_report(server, tmp_path, capsys):
    code = main(cli("replay", str(SCENARIOS / "woman-letrozole-no-data.json"), "--url", server.url, "--json"))
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["summary"]["passed"] == 1 and report["summary"]["total"] == 1
    assert report["fixtures"][0]["verdict"] == "passed"
    assert report["summary"]["latency_ms"]["p95"] > 0


def test_replay_counts_an_unreachable_server_as_errored(tmp_path, capsys):
    code = main(
        cli(
            "replay",
            str(SCENARIOS / "patient-with-no-data.json"),
            "--url",
            "http://127.0.0.1:9",
            "--connect-timeout",
            "1",
        )
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "ERRORED: " in out and "discovery failed" in out


def test_request_prints_the_cards(server, capsys):
    fixture = SCENARIOS / "woman-letrozole-falling-spine-no-vitamin-d.json"
    code = main(cli("request", str(fixture), "--hook", "order-sign", "--url", server.url))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "bone-health-order-sign answered 4 card(s)" in out  # and the yearly calcium: none on record
    assert "-> Order calcium and albumin (create, create)" in out
    lines = out.splitlines()
    assert any("warning" in line and "falling-bone-density" in line for line in lines)
    assert any("info" in line and "vitamin-d-missing" in line for line in lines)
    assert "-> Order 25-OH vitamin D (create)" in out
    assert "dates moved +464 days" in out  # 2026-11-22 -> 2028-02-29


def test_request_json_and_order_select_selections(server, capsys):
    fixture = SCENARIOS / "trt-man-anastrozole-severe-estradiol-pmol.json"
    code = main(cli("request", str(fixture), "--hook", "order-select", "--url", server.url, "--json"))
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "low-estradiol-on-ai")
    assert card["indicator"] == "critical"
    updated = next(a for s in card["suggestions"] for a in s["actions"] if a["type"] == "update")
    assert updated["resource"]["id"] == "mr-ana"  # the selected draft, halved in frequency
    assert updated["resource"]["dosageInstruction"][0]["timing"]["repeat"]["period"] == 2


def test_request_http_error_exits_non_zero_with_the_diagnostics(server, capsys):
    fixture = SCENARIOS / "trt-man-anastrozole-low-estradiol.json"
    code = main(
        cli(
            "request",
            str(fixture),
            "--hook",
            "order-sign",
            "--url",
            server.url,
            "--prefetch",
            "partial",
            "--omit",
            "dxa",
            "--omit",
            "patient",
        )
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1
    assert err[0].startswith("cds: error: HTTP 412 from POST ")
    assert (
        "prefetch data could not be obtained for patient, dxa" in err[0]
        or "prefetch data could not be obtained for dxa, patient" in err[0]
    )


def test_request_without_prefetch_is_412(server, capsys):
    code = main(
        cli(
            "request",
            str(SCENARIOS / "patient-with-no-data.json"),
            "--hook",
            "patient-view",
            "--url",
            server.url,
            "--prefetch",
            "none",
        )
    )
    assert code == 1
    assert "HTTP 412" in capsys.readouterr().err


def test_an_unsigned_call_is_refused(server, capsys):
    code = main(["request", str(SCENARIOS / "patient-with-no-data.json"), "--url", server.url])
    err = capsys.readouterr().err
    assert code == 1
    assert "no signing key" in err
    assert "HTTP 401 from GET " in err and "(no body)" in err


def test_the_hook_comes_from_the_sidecar_when_not_given(server, capsys):
    code = main(
        cli("request", str(SCENARIOS / "woman-anastrozole-multiple-dxa-sites.json"), "--url", server.url)
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "bone-health-patient-view answered 3 card(s)" in out and "Left femur" in out
    assert "calcium-monitoring-due" in out


def test_a_bundle_without_sidecar_needs_a_hook(server, tmp_path, capsys):
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}))
    assert main(cli("request", str(bundle), "--url", server.url)) == 2
    assert "--hook is required" in capsys.readouterr().err


def test_a_sidecar_can_expect_an_error_status(server, tmp_path, capsys):
    shutil.copy(SCENARIOS / "patient-with-no-data.json", tmp_path / "no-prefetch.json")
    sidecar = {"hook": "patient-view", "at": "2026-11-22", "prefetch": "none", "status": 412, "cards": []}
    (tmp_path / "no-prefetch.expected.json").write_text(json.dumps(sidecar))
    assert main(cli("replay", str(tmp_path), "--url", server.url)) == 0
    sidecar["status"] = 200
    (tmp_path / "no-prefetch.expected.json").write_text(json.dumps(sidecar))
    assert main(cli("replay", str(tmp_path), "--url", server.url)) == 1
    out = capsys.readouterr().out
    assert (
        "ERRORED: no-prefetch.json" in out
        and "+ answered HTTP 412: prefetch data could not be obtained" in out
    )


def test_replay_of_every_fixture_against_a_default_server_passes_or_says_why_it_skips(server, capsys):
    """The project's own fixtures against a server with the default settings: the ones that need a site
    config, or data the request builder does not send, are skipped with the reason; every other passes."""
    fixtures = ROOT / "fixtures"
    code = main(cli("replay", str(fixtures), "--url", server.url))
    out = capsys.readouterr().out
    assert code == 0, out
    total = len(list(fixtures.rglob("*.expected.json")))
    rows = table(out)
    assert rows["fixtures"] == str(total) and rows["failed"] == rows["errored"] == "0"
    assert (rows["passed"], rows["skipped"]) == (str(total - 9), "9")
    skipped = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("SKIPPED: ")}
    assert skipped == {
        "bone-density-ai-treatment-threshold/out-woman-45-site-proxy-50.json",
        "bone-density-below-expected-for-age/in-woman-45-z-minus-2.0-site-proxy-50.json",
        "bone-density-z-score-not-postmenopausal/in-site-proxy-50-38-leuprolide-z-minus-2.2-named.json",
        "evaluation-gaps/in-result-for-another-patient.json",
        "dxa-baseline-missing/out-bmd-g-cm-minus-2-site-reads-as-g-cm2.json",
        "calcium-low-on-ai/in-coefficient-by-site-config.json",
        "calcium-monitoring-due/out-ionized-substitutes-by-site-config.json",
        "calcium-low-on-ai/in-ionized-1.14-below-site-limit.json",
        "calcium-low-on-ai/out-ionized-1.15-at-site-limit.json",
    }
    assert out.count("skipped: needs the site config postmenopausal_proxy_age=50, and the server runs the "
                     "packaged rule pack") == 3
    assert out.count("skipped: needs the site config units.read_g_cm-2_as_g_cm2=true, and the server runs "
                     "the packaged rule pack") == 1
    assert out.count("skipped: needs the site config calcium_albumin_coefficient=0, and the server "
                     "runs ") == 1
    assert out.count("skipped: needs the site config ionized_calcium_low_mmol_l=1.15, "
                     "ionized_calcium_substitutes=1, and the server runs ") == 3
    assert ("skipped: the request builder does not send Observation/e2-other (filed under another patient: "
            "no search for this patient returns it)") in out


@pytest.mark.parametrize(("site_yaml", "fixtures"), [
    ("thresholds:\n  postmenopausal_proxy_age: 50\n",
     ["bone-density-below-expected-for-age/in-woman-45-z-minus-2.0-site-proxy-50.json",
      "bone-density-z-score-not-postmenopausal/in-site-proxy-50-38-leuprolide-z-minus-2.2-named.json"]),
    ("thresholds:\n  ionized_calcium_substitutes: 1\n  ionized_calcium_low_mmol_l: 1.15\n",
     ["calcium-low-on-ai/in-ionized-1.14-below-site-limit.json",
      "calcium-low-on-ai/out-ionized-1.15-at-site-limit.json",
      "calcium-monitoring-due/out-ionized-substitutes-by-site-config.json"]),
])
def test_site_config_fixtures_run_against_a_server_with_a_site_config(tmp_path, capsys, site_yaml, fixtures):
    site = tmp_path / "site.yaml"
    site.write_text(site_yaml)
    public = [k for k in json.loads(KEYS.read_text())["keys"] if "d" not in k]
    trusted = tmp_path / "trusted-clients.json"
    trusted.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": public}}]}))
    now = dt.datetime.combine(SERVER_DAY, dt.time(9, 30), tzinfo=dt.UTC)
    app = create_app({"NOW": now, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "DEV_MODE": False,
                      "TRUSTED_CLIENTS": str(trusted), "SITE_CONFIG": str(site)})
    chosen = tmp_path / "fixtures"
    for name in fixtures:
        source = ROOT / "fixtures" / name
        (chosen / source.parent.name).mkdir(parents=True, exist_ok=True)
        for path in (source, source.with_name(source.stem + ".expected.json")):
            shutil.copy(path, chosen / source.parent.name / path.name)
    with LiveServer(app) as live:
        code = main(cli("replay", str(chosen), "--url", live.url))
    out = capsys.readouterr().out
    assert code == 0, out
    rows = table(out)
    assert (rows["passed"], rows["skipped"]) == (str(len(fixtures)), "0")


def test_request_says_what_of_the_bundle_it_does_not_send(server, capsys):
    fixture = ROOT / "fixtures" / "evaluation-gaps" / "in-result-for-another-patient.json"
    code = main(cli("request", str(fixture), "--url", server.url, "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert ("cds: note: not sent: Observation/e2-other (filed under another patient: no search for this "
            "patient returns it)") in captured.err
    sent_cards = {c["source"]["topic"]["code"] for c in json.loads(captured.out)["cards"]}
    assert "evaluation-gaps" not in sent_cards  # the service never saw the misfiled result

"""`cds audit ...`: list, show, export, rerun under another rule pack, token, migrate."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import yaml
from audit_support import SERVICE, hook_body

from cds.cli import main
from cds.rules.pack import DEFAULT_DIR


@pytest.fixture
def cli(app, monkeypatch, capsys):
    client = app.test_client()
    for body in (hook_body("ann"), hook_body("bob", dxa_drop=True)):
        assert client.post(f"/cds-services/{SERVICE}", json=body).status_code == 200
    monkeypatch.setenv("CDS_DATABASE_URL", app.config["DATABASE_URL"])
    monkeypatch.setenv("CDS_AUDIT_PATIENT_KEY_SECRET", app.config["AUDIT_PATIENT_KEY_SECRET"])
    monkeypatch.setenv("CDS_AUDIT_SPOOL_DIR", app.config["AUDIT_SPOOL_DIR"])

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        return code, capsys.readouterr().out

    return run


def test_list_and_show(cli):
    code, out = cli("audit", "list")
    assert code == 0 and out.startswith("2 record(s)") and "[warning] Falling bone density" in out
    code, out = cli("audit", "list", "--json", "--indicator", "warning")
    assert code == 0 and json.loads(out)["total"] == 1
    code, out = cli("audit", "show", "2")
    assert code == 0 and "fired falling-bone-density v1.0.0" in out and "card [warning]" in out
    code, out = cli("audit", "show", "1", "--json")
    assert code == 0 and json.loads(out)["record"]["service"] == SERVICE
    code, _ = cli("audit", "show", "77")
    assert code == 2


def test_export_ndjson_and_csv(cli, tmp_path):
    code, out = cli("audit", "export", "--format", "ndjson")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [x["seq"] for x in lines] == [1, 2] and lines[1]["prevHash"] == lines[0]["hash"]
    target = tmp_path / "audit.csv"
    code, _ = cli("audit", "export", "--format", "csv", "--output", str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert code == 0 and [r["seq"] for r in rows] == ["1", "2"] and rows[0]["outcome"] == "ok"
    assert "falling-bone-density" in rows[1]["rules"]


def test_patient_key_finds_the_patients_records(cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Patient/bob\n"))
    code, out = cli("audit", "patient-key")
    key = out.strip()
    assert code == 0 and len(key) == 64
    code, out = cli("audit", "list", "--json", "--patient-key", key)
    records = json.loads(out)["records"]
    assert len(records) == 1 and "falling-bone-density" in records[0]["rules"]


def test_migrate_and_token(cli):
    code, out = cli("audit", "migrate")
    assert code == 0 and "revision 0004" in out
    code, out = cli("audit", "token", "carol")
    assert code == 0 and "carol:" in out


def _changed_pack(tmp_path):
    target = tmp_path / "rules-next"
    shutil.copytree(DEFAULT_DIR, target)
    vitd = target / "rules" / "vitamin-d-missing.yaml"
    rule = yaml.safe_load(vitd.read_text())
    rule["version"] = "1.1.0"
    rule["card"]["summary"] = "Check 25-OH vitamin D: none in {threshold.vitamin_d_interval_days} days"
    vitd.write_text(yaml.safe_dump(rule, sort_keys=False))
    falling = target / "rules" / "falling-bone-density.yaml"
    falling.write_text(falling.read_text().replace("status: active", "status: retired"))
    return target


def test_rerun_under_another_pack(cli, tmp_path):
    code, out = cli("audit", "rerun", "--rules", str(DEFAULT_DIR))
    assert code == 0 and "2 call(s)" in out and ": 0 would differ" in out
    changed = str(_changed_pack(tmp_path))
    code, out = cli("audit", "rerun", "--rules", changed, "--json")
    report = json.loads(out)
    assert code == 0 and report["totals"] == {
        "rerun": 2,
        "replayed": 2,
        "callsChanged": 2,
        "appeared": 0,
        "disappeared": 1,
        "changed": 2,
    }
    dxa_call = next(c for c in report["calls"] if c["disappeared"])
    assert dxa_call["disappeared"][0]["rule"] == "falling-bone-density"
    change = report["calls"][0]["changed"][0]
    assert change["rule"] == "vitamin-d-missing" and change["after"]["summary"].startswith("Check 25-OH")
    code, out = cli("audit", "rerun", "--rules", str(DEFAULT_DIR), "--since", "2999-01-01")
    assert "re-ran 0 call(s)" in out


def test_the_former_name_replay_still_reruns_but_is_not_in_the_help(cli, tmp_path):
    changed = str(_changed_pack(tmp_path))
    code, old = cli("audit", "replay", "--rules", changed, "--json")
    assert code == 0
    assert json.loads(old) == json.loads(cli("audit", "rerun", "--rules", changed, "--json")[1])
    from click.testing import CliRunner

    from cds.cli import cli as command_line

    shown = CliRunner().invoke(command_line, ["audit", "--help"])
    assert shown.exit_code == 0 and "rerun" in shown.output and "replay" not in shown.output


def test_audit_commands_on_a_database_no_call_has_reached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path}/fresh.sqlite3")
    assert main(["audit", "verify"]) == 0
    assert "0 record(s) verified" in capsys.readouterr().out
    assert main(["audit", "list"]) == 0
    assert "0 record(s)" in capsys.readouterr().out


def test_audit_command_with_an_unreachable_database_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert main(["audit", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cds: error: cannot open the audit database") and "\n" not in err


def test_show_says_when_the_patient_was_out_of_scope(cli, app):
    body = hook_body("carl")
    body["prefetch"]["patient"]["deceasedDateTime"] = "2025-02-01T08:00:00Z"
    response = app.test_client().post(f"/cds-services/{SERVICE}", json=body)
    assert response.status_code == 200 and response.get_json() == {"cards": []}
    code, out = cli("audit", "show", "3")
    assert code == 0 and "out of scope (deceased): the patient is recorded as deceased on 2025-02-01" in out
    code, out = cli("audit", "show", "3", "--json")
    record = json.loads(out)["record"]
    assert record["outOfScope"]["code"] == "deceased" and record["cards"] == [] and record["fired"] == []
    assert json.loads(cli("audit", "show", "1", "--json")[1])["record"]["outOfScope"] is None


def test_show_finds_a_call_by_its_hook_instance(app, cli):
    instance = "8d3f0a52-6a1c-4e0e-9a57-2f1f3c9b7e10"
    client = app.test_client()
    for _ in range(2):  # the EHR sent the same call twice: both records are named, the newest shown
        answer = client.post(f"/cds-services/{SERVICE}", json=hook_body("cy", instance=instance))
        assert answer.status_code == 200
    code, out = cli("audit", "show", instance)
    assert code == 0, out
    assert out.startswith(f"hookInstance {instance} was recorded 2 times (#3, #4); the newest:")
    assert "record #4 " in out and f"hookInstance {instance}" in out
    code, out = cli("audit", "show", instance, "--json")
    assert code == 0 and json.loads(out)["seq"] == 4 and json.loads(out)["record"]["hookInstance"] == instance
    code, _ = cli("audit", "show", "0b7e3a3c-0000-4000-8000-000000000000")
    assert code == 2


def test_show_and_list_name_the_order_and_the_next_page(cli):
    code, out = cli("audit", "show", "2")
    fired = [line for line in out.splitlines() if line.startswith("  fired falling-bone-density")]
    assert code == 0 and len(fired) == 1 and " for MedicationRequest/" in fired[0]
    code, out = cli("audit", "list", "--limit", "1")
    assert code == 0 and out.startswith("2 record(s)")
    assert out.splitlines()[-1] == "showing 1-1 of 2; next page: add --offset 1 (or --limit up to 500)"
    code, out = cli("audit", "list", "--limit", "1", "--offset", "1")
    assert code == 0 and "showing" not in out and len(out.splitlines()) == 2


def test_token_says_the_service_must_be_restarted(cli):
    code, out = cli("audit", "token", "dana")
    assert code == 0
    entry = next(line for line in out.splitlines() if line.startswith("add to CDS_AUDITOR_TOKENS: "))
    assert entry.split(": ", 1)[1].startswith("dana:")
    assert "restart the service with the new CDS_AUDITOR_TOKENS value" in out
    assert main(["audit", "token", "a:b"]) == 2


def test_the_audit_commands_are_on_the_flask_command_line(app, cli):
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["audit", "list", "--limit", "1"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.startswith("2 record(s)") and "next page: add --offset 1" in listed.output
    missing = runner.invoke(args=["audit", "show", "77"])
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == [
        "cds: error: no audit record '77' (give a seq, record id, card uuid or hookInstance)"
    ]


def test_until_a_date_includes_that_whole_day_as_the_api_does(cli, app):
    """`--until 2026-12-01` keeps that day's records (the API and the pages read it so); a date-time is the
    first instant left out."""
    import datetime as dt

    from audit_support import BEARER

    code, out = cli("audit", "list", "--json")
    times = [dt.datetime.fromisoformat(r["time"]) for r in json.loads(out)["records"]]
    assert code == 0 and len(times) == 2
    day = min(times).date()
    api = app.test_client()
    for until, expected in [(day.isoformat(), sum(t.date() <= day for t in times)),
                            ((day - dt.timedelta(days=1)).isoformat(), 0),
                            (f"{day.isoformat()}T00:00:00", 0)]:
        code, out = cli("audit", "list", "--json", "--until", until)
        assert code == 0 and json.loads(out)["total"] == expected, until
        answer = api.get("/audit/api/records", query_string={"until": until}, headers=BEARER)
        assert answer.status_code == 200 and answer.get_json()["total"] == expected, until
    assert sum(t.date() <= day for t in times) >= 1
    code, out = cli("audit", "rerun", "--rules", str(DEFAULT_DIR), "--until", day.isoformat(), "--json")
    rerun = json.loads(out)["totals"]["rerun"]
    assert code == 0 and rerun == sum(t.date() <= day for t in times), out[:300]

"""``cds gaps``: the care gaps of a Bulk Data export are the cards patient-view gives for the same data.

Real components throughout: the command line (``cds.cli.main``), the rule pack, the SQLite audit trail of
the test's settings, a local Dask cluster, and a scheduler and worker started as processes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from builders import med, obs, patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.cli import main
from cds.population import report
from cds.population.partition import Job, PackMismatch, evaluator_for, map_piece, route

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "fixtures" / "population-export"
REALISTIC = ROOT / "fixtures" / "realistic"
AT = "2026-11-22"
sys.path.insert(0, str(ROOT / "scripts"))

import build_population_export  # noqa: E402


def gaps(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["gaps", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def issues_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "gaps.ndjson").read_text().splitlines()]


def write_ndjson(path: Path, resources: list[Any]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources))


# -- the shipped example export ----------------------------------------------------------------------------

def test_the_committed_example_export_is_what_the_script_writes():
    for name, data in build_population_export.files().items():
        assert (EXPORT / name).read_bytes() == data, f"{name}: run scripts/build_population_export.py"
    assert {p.name for p in EXPORT.iterdir()} == set(build_population_export.files())
    manifest = json.loads((EXPORT / "manifest.json").read_text())
    assert {"transactionTime", "request", "requiresAccessToken", "output", "error"} <= set(manifest)
    names = [o["url"].rsplit("/", 1)[1] for o in manifest["output"]]
    assert "1.MedicationRequest.ndjson" in names and any(n.endswith(".ndjson.gz") for n in names)
    assert sum(n.startswith("Observation.") for n in names) >= 2


def _evaluate(bundle: Path, capsys) -> dict[str, Any]:
    assert main(["evaluate", str(bundle), "--hook", "patient-view", "--at", AT, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("validate_all", [True, False], ids=["validate-all", "as-the-hook-validates"])
def test_the_gaps_are_the_patient_view_cards_of_every_bundle_of_the_realistic_corpus(tmp_path, capsys,
                                                                                      validate_all):
    out = tmp_path / "out"
    flag = ["--validate-all"] if validate_all else []
    code, printed, _ = gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "1", *flag], capsys)
    assert code == 0, printed
    summary = summary_of(out)
    rows = (out / "gaps.csv").read_text().splitlines()[1:]
    by_patient: dict[str, list[tuple[str, str, str, str]]] = {}
    import csv

    for pid, rule, version, indicator, text, _evidence in csv.reader(rows):
        by_patient.setdefault(pid, []).append((rule, version, indicator, text))
    issues = issues_of(out)
    expected_out_of_scope = 0
    bundles = sorted(p for p in REALISTIC.glob("*.json") if not p.name.endswith(".expected.json"))
    assert len(bundles) == summary["patients"]["read"] == 12
    compared = 0
    for bundle in bundles:
        resources = [e["resource"] for e in json.loads(bundle.read_text())["entry"]]
        pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        answer = _evaluate(bundle, capsys)
        versions = {f["rule"]: f["version"] for f in answer["fired"]}
        cards = sorted((c["source"]["topic"]["code"], versions[c["source"]["topic"]["code"]], c["indicator"],
                        c["summary"]) for c in answer["cards"])
        assert sorted(by_patient.get(pid, [])) == cards, bundle.name
        mine = [i for i in issues if i["patient"]["reference"] == f"Patient/{pid}"]
        assert sorted(i["detail"] for i in mine) == sorted(c[3] for c in cards), bundle.name
        expected_out_of_scope += answer["out_of_scope"] is not None
        compared += len(cards)
    assert compared == summary["gaps"]["total"] == len(issues) > 0
    assert summary["patients"]["outOfScope"] == expected_out_of_scope >= 3
    assert summary["patients"]["inScope"] + expected_out_of_scope == 12
    assert summary["outOfScope"] == {"below_min_age": 1, "deceased": 3}
    p = summary["patients"]
    assert printed.strip().startswith(f"{p['read']} patient(s) read: {p['inScope']} in scope")
    if not validate_all:
        # no template selects the draft order (patient-view reads no draft): it is not validated, and it is
        # counted as not read by the rule pack, never silently dropped
        assert summary["setAside"]["lines"] == [] and summary["validateAll"] is False and code == 0
        assert summary["notReadByRulePack"].get("MedicationRequest", 0) >= 1
        return
    assert summary["validateAll"] is True
    # the one resource that is not valid R4: the sandbox's draft order (category an object, not a list),
    # which patient-view does not read (its medications are active, on-hold, completed or stopped orders)
    [aside] = summary["setAside"]["lines"]
    assert (aside["file"], aside["kind"]) == ("1.MedicationRequest.ndjson", "invalid")
    assert "mr-anastrozole-draft" in json.dumps(
        json.loads((EXPORT / aside["file"]).read_text().splitlines()[aside["line"] - 1]))
    assert "category" in aside["reason"] and code == 0
    p = summary["patients"]
    assert printed.strip().startswith(f"{p['read']} patient(s) read: {p['inScope']} in scope")


def test_every_gap_is_a_valid_r4_detected_issue_with_the_card_s_rule_and_evidence(tmp_path, capsys):
    from fhir.resources.R4B.detectedissue import DetectedIssue

    out = tmp_path / "out"
    assert gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "0"], capsys)[0] == 0
    issues = issues_of(out)
    assert issues
    for issue in issues:
        DetectedIssue.model_validate(issue)
        assert issue["identifiedDateTime"] == "2026-11-22T00:00:00+00:00"
        coding = issue["code"]["coding"][0]
        assert coding["code"] and coding["version"]
        assert issue["identifier"][0]["value"] == f"{coding['code']}|{coding['version']}"
        assert issue["reference"].startswith("http") and issue["extension"][0]["valueString"]
    severities = {(i["code"]["coding"][0]["code"], i["severity"]) for i in issues}
    assert ("low-estradiol-on-ai", "moderate") in severities
    assert ("calcium-monitoring-due", "low") in severities
    estradiol = next(i for i in issues if i["code"]["coding"][0]["code"] == "low-estradiol-on-ai")
    assert any(ref["reference"].startswith("Observation/") for ref in estradiol["implicated"])
    keys = [(i["patient"]["reference"], i["code"]["coding"][0]["code"]) for i in issues]
    assert keys == sorted(keys)
    assert len({i["id"] for i in issues}) == len(issues)


def test_one_worker_and_a_local_cluster_of_two_write_the_same_bytes(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert gaps([str(EXPORT), "--out", str(one), "--at", AT, "--workers", "1"], capsys)[0] == 0
    code, printed, _ = gaps([str(EXPORT), "--out", str(two), "--at", AT, "--workers", "2"], capsys)
    assert code == 0
    for name in ("gaps.ndjson", "gaps.csv", "report.html"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert summary_of(one)["engine"] == "local" and summary_of(two)["engine"] == "local Dask cluster"
    assert summary_of(two)["workers"] == 2 and "2 worker(s)" in printed
    assert not list(two.glob(".gaps-scratch*"))  # the scratch folder goes with the run


def test_files_read_in_pieces_give_the_same_outputs_and_line_numbers(tmp_path, capsys, monkeypatch):
    """A large plain file is read by several map tasks, each a byte range: the gaps are the same bytes and a
    line set aside is named by its line in the file."""
    from cds.population import run as run_module

    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    observations = (export / "Observation.000.ndjson").read_text().splitlines()
    observations.insert(299, "{broken")
    # a run of lines no template selects, of a patient not in the export, across several pieces
    ghost = [json.dumps({"resourceType": "Observation", "id": f"ghost-hr-{k}", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                         "subject": {"reference": "Patient/ghost"}, "valueQuantity": {"value": 70 + k},
                         "note": [{"text": "x" * 400}]}) for k in range(20)]
    observations[150:150] = ghost
    (export / "Observation.000.ndjson").write_text("\n".join(observations) + "\n")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert gaps([str(export), "--out", str(whole), "--at", AT, "--workers", "1"], capsys)[0] == 0
    monkeypatch.setattr(run_module, "piece_bytes", lambda total_bytes, workers: 3000)
    read: list[Any] = []
    monkeypatch.setattr(run_module, "map_piece",
                        lambda job, piece: read.append(piece) or map_piece(job, piece))
    assert gaps([str(export), "--out", str(split), "--at", AT, "--workers", "1"], capsys)[0] == 0
    assert sum(p.file.name == "Observation.000.ndjson" for p in read) > 10  # the file was read in pieces
    assert (whole / "gaps.ndjson").read_bytes() == (split / "gaps.ndjson").read_bytes()
    assert (whole / "gaps.csv").read_bytes() == (split / "gaps.csv").read_bytes()
    one, many = summary_of(whole), summary_of(split)
    assert one["inputs"] == many["inputs"] and one["setAside"] == many["setAside"]
    named = {(i["file"], i["line"]): i["reason"] for i in many["setAside"]["lines"]}
    assert ("Observation.000.ndjson", 320) in named  # the broken line, after the 20 inserted before it
    for k in range(20):
        assert named[("Observation.000.ndjson", 151 + k)] == \
            f"Observation/ghost-hr-{k}: its patient is not in the export"
    assert one["patients"] == many["patients"]
    assert many["partitions"] == one["partitions"] and len(many["inputs"]) == len(one["inputs"])


def _wait_for(condition, what: str, deadline: float = 120.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {deadline} s")


@pytest.mark.slow
def test_a_run_on_a_dask_scheduler_and_worker_started_as_processes(tmp_path, capsys):
    """``dask scheduler`` and ``dask worker`` as their own processes; ``cds gaps --scheduler`` writes the
    same bytes as the plain loop."""
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ)
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "worker.log", "w")]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(scheduler_file)], stdout=logs[0], stderr=subprocess.STDOUT,
        env=env)
    worker = None
    try:
        address = _wait_for(lambda: scheduler_file.is_file() and scheduler_file.stat().st_size
                            and json.loads(scheduler_file.read_text())["address"], "the scheduler's address")
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
             "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(tmp_path / "worker-space")],
            stdout=logs[1], stderr=subprocess.STDOUT, env=env)
        from distributed import Client

        with Client(address, timeout="60s") as client:
            _wait_for(lambda: len(client.scheduler_info()["workers"]) >= 1, "the worker to join")
        local, remote = tmp_path / "local", tmp_path / "remote"
        assert gaps([str(EXPORT), "--out", str(local), "--at", AT, "--workers", "1"], capsys)[0] == 0
        code, printed, err = gaps([str(EXPORT), "--out", str(remote), "--at", AT, "--scheduler", address,
                                   "--scratch", str(tmp_path / "shared-scratch")], capsys)
        assert code == 0, err
        assert (local / "gaps.ndjson").read_bytes() == (remote / "gaps.ndjson").read_bytes()
        assert (local / "gaps.csv").read_bytes() == (remote / "gaps.csv").read_bytes()
        summary = summary_of(remote)
        assert summary["engine"] == address and summary["workers"] == 1 and address in printed
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
        for process in (worker, scheduler):
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=60)
        for log in logs:
            log.close()


# -- what is set aside, and what stops the run --------------------------------------------------------------

def _hostile_export(folder: Path) -> None:
    folder.mkdir()
    ana = med(pid="p1", mid="mr-1")
    write_ndjson(folder / "Patient.ndjson", [
        patient("p1", gender="female", birth="1958-03-01"),
        "{not json",
        {"resourceType": "Patient"},
        '["a", "list"]',
        patient("p2", gender="male", birth="1960-01-01"),
        {**patient("p3"), "birthDate": "in the spring"},
    ])
    write_ndjson(folder / "Observation.000.ndjson", [
        obs("2243-4", 8, "pg/mL", "2026-10-01", pid="p2"),
        {**obs("1989-3", 30, "ng/mL", "2026-10-01", pid="ghost"), "id": "orphan-1"},
        {**obs("2243-4", 9, "pg/mL", "2026-10-02", pid="p1"), "id": "bad-date",
         "effectiveDateTime": "last tuesday"},
        {"id": "no-type"},
        "",
        obs("1989-3", 30, "ng/mL", "2026-10-01", pid="p3"),
    ])
    absolute = dict(med(pid="p2", mid="mr-2"))
    absolute["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p2"}
    data = "".join(json.dumps(r) + "\n" for r in [ana, absolute]).encode()
    (folder / "1.MedicationRequest.ndjson.gz").write_bytes(gzip.compress(data))


def test_broken_lines_orphans_and_invalid_r4_are_set_aside_with_file_and_line(tmp_path, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    _hostile_export(export)
    code, printed, err = gaps([str(export), "--out", str(out), "--at", AT, "--workers", "1"], capsys)
    assert code == 0, err
    summary = summary_of(out)
    aside = {(i["file"], i["line"], i["kind"]) for i in summary["setAside"]["lines"]}
    assert aside == {
        ("Patient.ndjson", 2, "malformed"), ("Patient.ndjson", 3, "malformed"),
        ("Patient.ndjson", 4, "malformed"),
        ("Patient.ndjson", 6, "invalid"),
        ("Observation.000.ndjson", 2, "orphan"), ("Observation.000.ndjson", 3, "invalid"),
        ("Observation.000.ndjson", 4, "malformed"), ("Observation.000.ndjson", 6, "orphan"),
    }
    reasons = {(i["file"], i["line"]): i["reason"] for i in summary["setAside"]["lines"]}
    assert reasons[("Patient.ndjson", 2)].startswith("not JSON")
    assert reasons[("Patient.ndjson", 4)] == "not a JSON object"
    assert "not in the export" in reasons[("Observation.000.ndjson", 2)]
    assert "effectiveDateTime" in reasons[("Observation.000.ndjson", 3)]
    assert summary["setAside"]["total"] == 8 and "8 line(s) set aside" in printed
    assert "its Patient was set aside" in reasons[("Observation.000.ndjson", 6)]
    counts = summary["patients"]
    assert counts["read"] == 3 and counts["inScope"] == 2 and counts["setAside"] == 1
    assert counts["read"] == sum(counts[k] for k in ("inScope", "outOfScope", "notEvaluated", "setAside"))
    files = {i["file"]: i for i in summary["inputs"]}
    assert files["1.MedicationRequest.ndjson.gz"]["lines"] == 2
    assert files["Observation.000.ndjson"]["blank"] == 1
    digest = hashlib.sha256((export / "Patient.ndjson").read_bytes()).hexdigest()
    assert files["Patient.ndjson"]["sha256"] == digest
    # the MedicationRequest with an absolute subject is p2's: p2's gaps name it as evidence
    p2 = [i for i in issues_of(out) if i["patient"]["reference"] == "Patient/p2"]
    assert any({"reference": "MedicationRequest/mr-2"} in i.get("implicated", []) for i in p2)
    # --strict: the same run, exit status 1
    code, _, _ = gaps([str(export), "--out", str(tmp_path / "strict"), "--at", AT, "--workers", "1",
                       "--strict"], capsys)
    assert code == 1
    assert summary_of(tmp_path / "strict")["exitStatus"] == 1


def test_a_line_no_template_selects_is_counted_as_not_read_and_validated_only_with_validate_all(
        tmp_path, capsys):
    """An invalid vital sign (heart rate, which no rule reads: no prefetch template selects it) is not
    validated by default, and is counted as not read by the rule pack, never silently dropped; with
    --validate-all it is set aside with its file and line. A selected resource the call would refuse is set
    aside either way."""
    export = tmp_path / "export"
    export.mkdir()
    write_ndjson(export / "Patient.ndjson", [patient("p1", gender="female", birth="1958-03-01")])
    heart_rate = {**obs("8867-4", 72, "/min", "2026-10-01", pid="p1"), "id": "hr-1", "status": 12}
    bad_estradiol = {**obs("2243-4", 9, "pg/mL", "2026-10-02", pid="p1"), "id": "e2-bad",
                     "effectiveDateTime": "last tuesday"}
    write_ndjson(export / "Observation.ndjson", [
        obs("2243-4", 8, "pg/mL", "2026-10-01", pid="p1"), heart_rate, bad_estradiol,
        {"resourceType": "Encounter", "id": "enc-1", "status": "finished", "class": {"code": "AMB"},
         "subject": {"reference": "Patient/p1"}},
        {"resourceType": "NotAType", "id": "x", "subject": {"reference": "Patient/p1"}},
    ])
    write_ndjson(export / "MedicationRequest.ndjson", [med(pid="p1", mid="mr-1")])
    out = tmp_path / "out"
    code, _, err = gaps([str(export), "--out", str(out), "--at", AT, "--workers", "1"], capsys)
    assert code == 0, err
    summary = summary_of(out)
    aside = {(i["file"], i["line"], i["kind"]) for i in summary["setAside"]["lines"]}
    assert aside == {("Observation.ndjson", 3, "invalid"), ("Observation.ndjson", 5, "invalid")}
    reasons = {i["line"]: i["reason"] for i in summary["setAside"]["lines"]}
    assert "effectiveDateTime" in reasons[3] and "not an R4 resource type" in reasons[5]
    assert summary["notReadByRulePack"] == {"Encounter": 1, "Observation": 1}
    assert summary["patients"]["read"] == 1 and summary["patients"]["inScope"] == 1
    code, _, err = gaps([str(export), "--out", str(tmp_path / "all"), "--at", AT, "--workers", "1",
                         "--validate-all"], capsys)
    assert code == 0, err
    every = summary_of(tmp_path / "all")
    aside = {(i["file"], i["line"], i["kind"]) for i in every["setAside"]["lines"]}
    assert aside == {("Observation.ndjson", 2, "invalid"), ("Observation.ndjson", 3, "invalid"),
                     ("Observation.ndjson", 5, "invalid")}
    assert "status" in {i["line"]: i["reason"] for i in every["setAside"]["lines"]}[2]
    assert every["notReadByRulePack"] == {"Encounter": 1}
    assert (out / "gaps.ndjson").read_bytes() == (tmp_path / "all" / "gaps.ndjson").read_bytes()


def test_a_line_no_template_selects_is_still_an_orphan_or_set_aside_with_its_patient(tmp_path, capsys):
    """The map phase sends a line no prefetch template selects to its bucket as its type and id only; such
    a line of a patient missing from the export is an orphan, one of a patient whose Patient the call
    refuses goes with it, and one of a type R4 does not have is invalid: each named with file and line."""
    export = tmp_path / "export"
    export.mkdir()
    write_ndjson(export / "Patient.ndjson", [
        patient("p1", gender="female", birth="1958-03-01"),
        {**patient("p3"), "birthDate": "in the spring"},
    ])
    heart_rate = {**obs("8867-4", 72, "/min", "2026-10-01", pid="ghost"), "id": "hr-ghost"}
    write_ndjson(export / "Observation.ndjson", [
        {**obs("8867-4", 70, "/min", "2026-10-01", pid="p3"), "id": "hr-p3"},
        {**obs("8867-4", 68, "/min", "2026-10-01", pid="p1"), "id": "hr-p1"},
        {"resourceType": "NotAType", "id": "x", "subject": {"reference": "Patient/p1"}},
        {**obs("2243-4", 8, "pg/mL", "2026-10-01", pid="p3"), "id": "e2-p3"},
        # consecutive lines of one patient no template selects travel as one bucket line: still each named
        *[{**heart_rate, "id": f"hr-ghost-{k}"} for k in range(3)],
        {"resourceType": "NotAType", "id": "y", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "NotAType", "id": "z", "subject": {"reference": "Patient/p1"}},
    ])
    out = tmp_path / "out"
    code, _, err = gaps([str(export), "--out", str(out), "--at", AT, "--workers", "1"], capsys)
    assert code == 0, err
    summary = summary_of(out)
    reasons = {(i["file"], i["line"], i["kind"]): i["reason"] for i in summary["setAside"]["lines"]}
    assert set(reasons) == {("Patient.ndjson", 2, "invalid"), ("Observation.ndjson", 1, "orphan"),
                            ("Observation.ndjson", 3, "invalid"), ("Observation.ndjson", 4, "orphan"),
                            ("Observation.ndjson", 5, "orphan"), ("Observation.ndjson", 6, "orphan"),
                            ("Observation.ndjson", 7, "orphan"), ("Observation.ndjson", 8, "invalid"),
                            ("Observation.ndjson", 9, "invalid")}
    for k in range(3):
        assert reasons[("Observation.ndjson", 5 + k, "orphan")] == \
            f"Observation/hr-ghost-{k}: its patient is not in the export"
    assert reasons[("Observation.ndjson", 1, "orphan")] == \
        "Observation/hr-p3: its Patient was set aside (not R4)"
    assert "birthDate" in reasons[("Patient.ndjson", 2, "invalid")]
    for line in (3, 8, 9):
        assert reasons[("Observation.ndjson", line, "invalid")] == \
            f"Observation.ndjson:{line}: resourceType 'NotAType' is not an R4 resource type"
    assert summary["notReadByRulePack"] == {"Observation": 1}
    assert summary["patients"]["read"] == 2 and summary["patients"]["setAside"] == 1
    # the same with every line read whole (no plan): the same lines set aside for the same reasons
    every = tmp_path / "every"
    code, _, err = gaps([str(export), "--out", str(every), "--at", AT, "--workers", "1", "--validate-all"],
                        capsys)
    assert code == 0, err
    again = {(i["file"], i["line"], i["kind"]): i["reason"] for i in summary_of(every)["setAside"]["lines"]}
    assert {k: v for k, v in again.items() if k[0] == "Observation.ndjson"} == \
        {k: v for k, v in reasons.items() if k[0] == "Observation.ndjson"}


@pytest.mark.parametrize(("name", "content", "said"), [
    ("Patient.ndjson", b'[{"resourceType": "Patient", "id": "p1"}]\n', "a JSON array, not NDJSON"),
    ("Patient.ndjson", b'{\n  "resourceType": "Patient",\n  "id": "p1"\n}\n', "over several lines"),
    ("Patient.ndjson", bytes(range(256)) * 4, "binary data, not NDJSON"),
    ("Patient.ndjson.gz", gzip.compress(b'{"resourceType": "Patient", "id": "p1"}\n' * 5000)[:300],
     "broken gzip stream"),
    ("Patient.ndjson.gz", b'{"resourceType": "Patient", "id": "p1"}\n', "named .gz but not gzip"),
])
def test_a_file_that_is_not_ndjson_stops_the_run_with_one_line_naming_it(tmp_path, capsys, name, content,
                                                                          said):
    export = tmp_path / "export"
    export.mkdir()
    write_ndjson(export / "Observation.ndjson", [obs("2243-4", 8, "pg/mL", "2026-10-01", pid="p1")])
    (export / name).write_bytes(content)
    code, printed, err = gaps([str(export), "--out", str(tmp_path / "out"), "--at", AT, "--workers", "1"],
                              capsys)
    assert code == 2 and printed == ""
    assert len(err.strip().splitlines()) == 1 and name in err and said in err, err
    assert "Traceback" not in err


def test_a_manifest_naming_a_missing_file_or_a_folder_without_ndjson_stops_the_run(tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    code, _, err = gaps([str(export), "--out", str(tmp_path / "out"), "--workers", "1"], capsys)
    assert code == 2 and "no NDJSON files" in err
    (export / "manifest.json").write_text(json.dumps({
        "transactionTime": "2026-11-22T00:00:00Z", "request": "x", "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://bulk.example.org/files/Patient.000.ndjson"}],
        "error": []}))
    code, _, err = gaps([str(export), "--out", str(tmp_path / "out"), "--workers", "1"], capsys)
    assert code == 2 and "Patient.000.ndjson" in err and len(err.strip().splitlines()) == 1
    code, _, err = gaps([str(EXPORT), "--out", str(EXPORT), "--workers", "1"], capsys)
    assert code == 2 and "is the export folder" in err and len(err.strip().splitlines()) == 1


def test_the_manifest_s_error_files_are_counted_as_the_server_s_errors(tmp_path, capsys):
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": "Observation/x could not be exported"}]}
    write_ndjson(export / "err.ndjson", [outcome, outcome])
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["error"] = [{"type": "OperationOutcome", "url": "https://bulk.example.org/fhir/bulkfiles/err.ndjson"}]
    (export / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    # --validate-all: the draft order no template selects is validated too (the one line set aside)
    argv = [str(export), "--out", str(out), "--at", AT, "--workers", "1", "--validate-all"]
    assert gaps(argv, capsys)[0] == 0
    summary = summary_of(out)
    assert summary["exportErrors"] == 2 and summary["manifest"]["transactionTime"]
    assert {"file": "err.ndjson", "role": "error"}.items() <= next(
        i for i in summary["inputs"] if i["file"] == "err.ndjson").items()
    assert summary["gaps"]["total"] == 11 and summary["setAside"]["total"] == 1


def test_a_medication_reference_is_resolved_across_the_export_as_the_hook_resolves_it(tmp_path, capsys):
    """A MedicationRequest naming its drug by ``medicationReference`` (a Medication in another file): the
    gaps are the cards patient-view gives for the bundle holding the patient, the order and the drug."""
    medication = {"resourceType": "Medication", "id": "med-ana", "code": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "84857",
         "display": "anastrozole"}]}}
    order = med(pid="pm", mid="mr-ref")
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-ana"}
    person = patient("pm", gender="female", birth="1955-02-02")
    export = tmp_path / "export"
    export.mkdir()
    write_ndjson(export / "Patient.ndjson", [person])
    write_ndjson(export / "MedicationRequest.ndjson", [order])
    write_ndjson(export / "Medication.ndjson", [medication])
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in (person, order, medication)]}))
    answer = _evaluate(bundle, capsys)
    assert answer["cards"], "the drug is known only through the Medication"
    out = tmp_path / "out"
    assert gaps([str(export), "--out", str(out), "--at", AT, "--workers", "1"], capsys)[0] == 0
    assert sorted(i["detail"] for i in issues_of(out)) == sorted(c["summary"] for c in answer["cards"])
    assert summary_of(out)["setAside"]["total"] == 0


def test_a_worker_with_another_rule_pack_is_refused_in_one_line(tmp_path):
    job = Job(scratch=str(tmp_path), partitions=1, at=__import__("datetime").datetime(2026, 11, 22),
              pack_hash="0" * 64, rules_dir=None, site_config=None, source_label="x", names=())
    with pytest.raises(PackMismatch, match="install the same rule pack on every worker"):
        evaluator_for(job)


def test_a_cluster_whose_worker_has_another_rule_pack_is_refused_before_any_task(tmp_path):
    import datetime as dt

    from distributed import Client, LocalCluster

    from cds.population.run import _Dask
    from cds.rules.pack import load

    pack = load()
    job = Job(scratch=str(tmp_path), partitions=1, at=dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
              pack_hash="f" * 64, rules_dir=None, site_config=None, source_label="x", names=())
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        said = f"has rule pack {pack.version} sha256 {pack.content_hash[:12]}"
        with pytest.raises(PackMismatch, match=said):
            _Dask(client).prepare(job, pack)
        _Dask(client).prepare(dataclasses.replace(job, pack_hash=pack.content_hash), pack)  # the same: fine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["resourceType", "id", "subject", "patient", "reference"]), inner,
                        max_size=4), max_leaves=12))
def test_every_json_value_is_routed_or_set_aside_with_a_reason(value):
    kind, said = route(value)
    assert kind in {"patient", "medication", "unlinked", "bad"} and said
    if kind == "patient":
        assert "\t" not in said and "\n" not in said


_LINE = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.text(max_size=30).map(lambda t: t.replace("\n", " ").encode("utf-8", "surrogatepass")),
    st.builds(lambda rid, ref, rtype: json.dumps(
        {"resourceType": rtype, "id": rid, "subject": {"reference": ref}}).encode(),
              st.text(max_size=6), st.text(max_size=20),
              st.sampled_from(["Patient", "Observation", "Medication", "Group", ""])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(_LINE, max_size=12))
def test_every_line_of_a_file_is_bucketed_counted_or_set_aside(tmp_path_factory, lines):
    """Whatever the bytes of a line, the map phase never fails on it: each non-blank line goes to a bucket
    or the medications, is counted as no patient's data, or is set aside with its line number."""
    import datetime as dt

    from cds.population.export import ExportFile
    from cds.population.partition import map_file

    folder = tmp_path_factory.mktemp("map")
    path = folder / "Mixed.ndjson"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    job = Job(scratch=str(folder / "scratch"), partitions=3, at=dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
              pack_hash="", rules_dir=None, site_config=None, source_label="x", names=("Mixed.ndjson",))
    stats = map_file(job, ExportFile(0, str(path), "Mixed.ndjson"))
    written = [raw for f in sorted((folder / "scratch" / "map").glob("f*"))
               for raw in f.read_bytes().split(b"\n") if raw]
    numbers = sorted(int(raw.split(b"\t", 2)[1]) for raw in written)
    aside = sorted(i["line"] for i in stats["setAside"])
    unlinked = sum(stats["notPatientData"].values())
    blank = [n for n, line in enumerate(lines, 1) if not line.strip()]
    assert stats["lines"] == len(lines) and stats["blank"] == len(blank)
    assert len(numbers) + len(aside) + unlinked + len(blank) == len(lines)
    assert not set(numbers) & set(aside) and not (set(numbers) | set(aside)) & set(blank)


# -- the audit record and the report -------------------------------------------------------------------------

def test_each_run_is_one_audit_record_listed_shown_and_verified(tmp_path, capsys):
    out = tmp_path / "out"
    assert gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "1"], capsys)[0] == 0
    summary = summary_of(out)
    assert main(["audit", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    run = next(r for r in listed["records"] if r["service"] == "population-gaps")
    assert run["id"] == summary["audit"]["recordId"]
    assert main(["audit", "show", summary["audit"]["recordId"], "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["record"]
    assert record["rulePack"]["contentHash"] == summary["rulePack"]["contentHash"]
    assert record["run"]["user"] and record["run"]["counts"]["read"] == 12
    shas = {o["file"]: o["sha256"] for o in record["run"]["outputs"]}
    for name in ("gaps.ndjson", "gaps.csv", "report.html", "summary.json"):
        assert shas[name] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert {i["file"]: i["sha256"] for i in record["run"]["inputs"]} == {
        i["file"]: hashlib.sha256((EXPORT / i["file"]).read_bytes()).hexdigest() for i in summary["inputs"]}
    text = json.dumps(record)
    assert "93581692-1fe2-461e-bb99-d3e7d6a2b3e0" not in text  # no patient id in the audit trail
    assert main(["audit", "show", str(run["seq"])]) == 0
    shown = capsys.readouterr().out
    assert "population-gaps" in shown and f"output gaps.ndjson  sha256 {shas['gaps.ndjson']}" in shown
    assert main(["audit", "verify"]) == 0
    assert "audit chain OK" in capsys.readouterr().out


@pytest.mark.postgres
def test_run_records_on_postgresql_are_links_of_the_chain_and_verify(pg_base_url, tmp_path, capsys,
                                                                      monkeypatch):
    """On PostgreSQL each run claims a chain of its own for its one record (as a service process does),
    and lets it go: two runs, and the trail verifies."""
    monkeypatch.setenv("CDS_DATABASE_URL", pg_base_url)
    for name in ("one", "two"):
        code = gaps([str(EXPORT), "--out", str(tmp_path / name), "--at", AT, "--workers", "1"], capsys)[0]
        assert code == 0
    assert main(["audit", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    ids = {r["id"] for r in listed["records"] if r["service"] == "population-gaps"}
    assert ids == {summary_of(tmp_path / n)["audit"]["recordId"] for n in ("one", "two")}
    assert main(["audit", "verify"]) == 0
    assert "audit chain OK" in capsys.readouterr().out


def test_the_auditor_page_shows_a_run_record(tmp_path, capsys, auth_config):
    import hashlib as h

    from cds import create_app

    out = tmp_path / "out"
    assert gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "1"], capsys)[0] == 0
    token = "auditor-token-for-population-tests"
    app = create_app({**auth_config, "DATABASE_URL": os.environ["CDS_DATABASE_URL"],
                      "AUDITOR_TOKENS": f"dana:{h.sha256(token.encode()).hexdigest()}"})
    key = summary_of(out)["audit"]["recordId"]
    page = app.test_client().get(f"/audit/records/{key}", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Population run" in body and "gaps.ndjson" in body and "Patient.ndjson" in body


def test_the_report_is_self_contained_with_charts_and_escapes_every_value(tmp_path, capsys):
    out = tmp_path / "out"
    assert gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "1"], capsys)[0] == 0
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4 and "Gaps per rule" in page and "Gaps per indicator" in page
    assert "by sex" in page and "by age band" in page
    assert "<script" not in page and "src=" not in page and "http-equiv" not in page
    assert 'href="http' not in page and "@import" not in page
    assert "d2fe5187-7f88-485e-ac9f-2b36d62fbcbf" in page  # a patient with gaps, listed
    hostile = "<script>alert(1)</script>"
    summary = summary_of(out)
    summary["gaps"]["perRule"][hostile] = 1
    summary["bySex"][hostile] = {"patients": 1, "inScope": 1, "withGaps": 1, "gaps": 1}
    summary["export"] = hostile
    html = report.render(summary, iter([[hostile, "female", [[hostile, "warning", f"summary {hostile}"]]]]))
    assert "<script" not in html and html.count("&lt;script&gt;") >= 5


def test_the_example_in_the_readme_is_what_the_command_prints(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    out = tmp_path / "gaps-out"
    code, printed, _ = gaps([str(EXPORT), "--out", str(out), "--at", AT, "--workers", "1"], capsys)
    assert code == 0
    shown = printed.split("; outputs in")[0]
    assert shown in readme, "README: update the cds gaps example's output"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_broken_midway_stops_the_run_in_one_line_and_its_scratch_goes(tmp_path, capfd, workers):
    """Also with worker processes: their log lines would go to the same stderr (captured by descriptor)."""
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    with gzip.open(export / "Observation.001.ndjson.gz", "rb") as stream:
        data = stream.read()
    (export / "Observation.001.ndjson.gz").write_bytes(gzip.compress(data)[: len(gzip.compress(data)) - 40])
    out = tmp_path / "out"
    code, _, err = gaps([str(export), "--out", str(out), "--at", AT, "--workers", workers], capfd)
    assert code == 2 and "Observation.001.ndjson.gz" in err and "gzip" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not list(out.glob(".gaps-scratch*/*"))


def _real_shapes_export(folder: Path) -> None:
    """Shapes real systems send: US Core's DXA Observations (with their DiagnosticReport), a Medication named
    by ``medicationReference``, ``urn:uuid`` subjects, a local code before the LOINC one, an estradiol below
    the detection limit as ``valueString``, a unit given as text only, a deceased patient and a minor."""
    folder.mkdir()
    dxa = sorted((ROOT.parent / "shared" / "examples" / "us-core-dxa").glob("*.json"))
    shared = [json.loads(p.read_text()) for p in dxa]
    if not shared:  # outside this machine's layout: the same shape, written here
        shared = [{"resourceType": "Observation", "id": "dxa-femur-l-t-score-bmd", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "80948-3"}]},
                   "subject": {"reference": "Patient/example"}, "effectiveDateTime": "2021-11-10",
                   "valueQuantity": {"value": -1.48, "unit": "T-Score",
                                     "system": "http://unitsofmeasure.org", "code": "1"}}]
    man = "urn:uuid:6f1b2c3d-0000-4000-8000-000000000001"
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    write_ndjson(folder / "Patient.ndjson", [
        patient("example", gender="female", birth="1958-04-02"),
        patient(man.rsplit(":", 1)[1], gender="male", birth="1962-07-01"),
        {**patient("dead", gender="female", birth="1950-01-01"), "deceasedDateTime": "2025-03-01"},
        patient("kid", gender="female", birth="2012-01-01"),
    ])
    observations = [r for r in shared if r["resourceType"] == "Observation"]
    write_ndjson(folder / "Observation.000.ndjson", observations + [
        {"resourceType": "Observation", "id": "e2-str", "status": "final", "subject": {"reference": man},
         "code": {"coding": [{"system": "urn:oid:1.2.840.114350", "code": "E2LOCAL"},
                             {"system": "http://loinc.org", "code": "2243-4"}]},
         "effectiveDateTime": "2026-09-01", "valueString": "<5 pg/mL"},
        {"resourceType": "Observation", "id": "vd-text", "status": "final", "subject": {"reference": man},
         "code": {"coding": [{"system": "http://loinc.org", "code": "62292-8"}]},
         "effectiveDateTime": "2026-08-01", "valueQuantity": {"value": 18, "unit": "ng/mL"}},
        {**obs("8867-4", 70, "/min", "2026-08-01", pid="x"), "id": "hr", "subject": {"reference": man}},
    ])
    write_ndjson(folder / "DiagnosticReport.ndjson",
                 [r for r in shared if r["resourceType"] != "Observation"])
    write_ndjson(folder / "Medication.ndjson", [
        {"resourceType": "Medication", "id": "med-ana",
         "code": {"coding": [{"system": rxnorm, "code": "199224",
                              "display": "anastrozole 1 MG Oral Tablet"}]}}])
    orders = [{"resourceType": "MedicationRequest", "id": "mr-ex", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/example"}, "authoredOn": "2024-01-10",
               "medicationReference": {"reference": "Medication/med-ana"}},
              {**med(pid="x", mid="mr-let"), "subject": {"reference": man}}]
    orders += [med(pid=p, mid=f"mr-{p}") for p in ("dead", "kid")]
    data = "".join(json.dumps(r) + "\n" for r in orders).encode()
    (folder / "1.MedicationRequest.ndjson.gz").write_bytes(gzip.compress(data))


def test_carrying_unread_lines_as_type_and_id_changes_nothing_on_real_data_shapes(tmp_path, capsys,
                                                                                   monkeypatch):
    """The lines no prefetch template can select travel as their type and id only: the same run with every
    line carried whole gives the same bytes and the same summary, on the shapes real systems send; and its
    gaps are the cards patient-view gives for each patient."""
    from cds.toolkit import prefetch_answer

    export = tmp_path / "export"
    _real_shapes_export(export)
    assert gaps([str(export), "--out", str(tmp_path / "plan"), "--at", AT, "--workers", "1"], capsys)[0] == 0
    monkeypatch.setattr(prefetch_answer.ReadPlan, "may_select", lambda self, resource: True)
    assert gaps([str(export), "--out", str(tmp_path / "all"), "--at", AT, "--workers", "1"], capsys)[0] == 0
    for name in ("gaps.ndjson", "gaps.csv", "report.html"):
        assert (tmp_path / "plan" / name).read_bytes() == (tmp_path / "all" / name).read_bytes(), name
    drop = ("elapsedSeconds", "audit", "outputs")
    plan, every = summary_of(tmp_path / "plan"), summary_of(tmp_path / "all")
    assert {k: v for k, v in plan.items() if k not in drop} == \
        {k: v for k, v in every.items() if k not in drop}
    assert plan["patients"]["read"] == 4 and plan["patients"]["outOfScope"] == 2
    assert plan["notReadByRulePack"].get("Observation") == 1 and plan["setAside"]["total"] == 0
    issues = issues_of(tmp_path / "plan")
    rules = {(i["patient"]["reference"], i["code"]["coding"][0]["code"]) for i in issues}
    man = "Patient/6f1b2c3d-0000-4000-8000-000000000001"
    assert (man, "low-estradiol-on-ai") in rules and (man, "vitamin-d-low") in rules
    assert ("Patient/example", "vitamin-d-missing") in rules
    details = [i["detail"] for i in issues]
    assert any("<5 pg/mL" in d for d in details)

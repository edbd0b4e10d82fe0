"""``cds gaps --fhir-server``'s Bulk Data client (cds/population/bulk.py) against a fake Bulk Data server over
real HTTP (tests/bulk_server.py): SMART Backend Services, kick-off, polling with Retry-After, downloads, and
every way an export fails, each in one line."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from pathlib import Path
from typing import Any

import pytest
from builders import med, obs, patient
from bulk_server import CLIENT_ID, BulkServer, outcome
from hypothesis import given
from hypothesis import strategies as st

from cds import settings
from cds.cli import main
from cds.population.bulk import BulkExportError, export, one_line, retry_after

KEYS = Path(__file__).parent / "data" / "keys" / "test-client-jwks.json"


def key_pair(alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in json.loads(KEYS.read_text())["keys"] if k["alg"] == alg]
    return next(k for k in keys if "d" in k), next(k for k in keys if "d" not in k)


def population() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for n in range(3):
        pid = f"bulk-{n}"
        resources.append(patient(pid, gender="female", birth="1958-03-02"))
        resources.append(med(pid=pid, mid=f"mr-{n}"))
        resources += [obs("2243-4", 14.0 + i, "pg/mL", f"2026-0{i + 1}-10", pid=pid, oid=f"o-{n}-{i}")
                      for i in range(3)]
    resources.append({"resourceType": "Medication", "id": "med-1",
                      "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                           "code": "84857"}]}})
    return resources


def values(tmp_path: Path, alg: str = "ES384", **overrides: Any) -> dict[str, Any]:
    private, _ = key_pair(alg)
    key_file = tmp_path / f"bulk-{alg}.jwk.json"
    key_file.write_text(json.dumps(private))
    base = {"BULK_CLIENT_ID": CLIENT_ID, "BULK_KEY_FILE": str(key_file), "BULK_REQUEST_SECONDS": 30.0}
    return settings.load({**base, **overrides}, environ={})


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one_line_error(excinfo: pytest.ExceptionInfo[BulkExportError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    return message


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_an_export_is_fetched_with_smart_backend_services(tmp_path, alg):
    _, public = key_pair(alg)
    errors = [outcome("Patient/bulk-9 could not be read"), outcome("Patient/bulk-9 could not be read"),
              outcome("Observation search timed out")]
    with BulkServer(population(), public_jwk=public, errors=errors) as server:
        said: list[str] = []
        result = export(server.base, tmp_path / "out" / "export", values(tmp_path, alg), say=said.append)
        folder = tmp_path / "out" / "export"
        assert result.folder == folder
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(item["url"] for item in manifest["output"]) == [
            "1.Medication.ndjson", "1.MedicationRequest.ndjson", "1.Observation.ndjson",
            "1.Patient.ndjson", "2.Observation.ndjson"]
        assert manifest["error"] == [{"type": "OperationOutcome", "url": "errors/1.OperationOutcome.ndjson",
                                      "count": 3}]
        assert manifest["transactionTime"] == "2026-11-22T09:00:00Z" and manifest["requiresAccessToken"]
        fetched = [r for item in manifest["output"] for r in lines(folder / item["url"])]
        assert sorted(r["id"] for r in fetched) == sorted(r["id"] for r in population())
        assert {item["type"]: item["count"] for item in manifest["output"] if item["type"] != "Observation"} \
            == {"Patient": 3, "MedicationRequest": 3, "Medication": 1}
        assert result.resources == {"Patient": 3, "Observation": 9, "MedicationRequest": 3, "Medication": 1}
        assert result.files["Observation"] == 2
        assert result.error_count == 3
        assert result.error_names == ["Patient/bulk-9 could not be read (x2)", "Observation search timed out"]
        # the kick-off as the IG asks
        assert server.kickoff_query == {"_type": "Patient,Observation,MedicationRequest,Medication"}
        assert server.kickoff_headers == {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        # one client assertion, as SMART Backend Services asks
        [(claims, header)] = server.assertions
        assert claims["iss"] == claims["sub"] == CLIENT_ID and claims["aud"] == server.token_endpoint
        assert 0 < claims["exp"] - time.time() <= 300 and claims["jti"]
        assert header["alg"] == alg and header["kid"] == public["kid"]
        # the token on every request to the server and its files; none to the token endpoint
        token = next(iter(server.tokens))
        for _, method, path, auth in server.requests:
            expected = None if path in ("/auth/token", "/fhir/.well-known/smart-configuration") \
                else f"Bearer {token}"
            assert auth == expected, (method, path)
        assert server.deleted  # the job is let go once its files are in
        assert not any(token in line for line in said)
        assert not (tmp_path / "out" / "export.partial").exists()


def test_a_slow_export_is_polled_as_retry_after_asks(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, pending=3, retry_after="1") as server:
        said: list[str] = []
        result = export(server.base, tmp_path / "export", values(tmp_path), say=said.append)
        polls = [at for at, _, _, _ in server.asked("GET", "/fhir/jobs/")]
        assert len(polls) == 4 and result.polls == 4
        gaps = [later - earlier for earlier, later in zip(polls, polls[1:], strict=False)]
        assert all(gap >= 0.95 for gap in gaps), gaps  # each wait the second the server asked for
        progress = [line for line in said if "in progress" in line]
        assert len(progress) == 3 and "(step 1 of many)" in progress[0] and "next check in 1 s" in progress[0]


def test_retry_after_is_capped_by_the_setting(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, pending=2, retry_after="3600") as server:
        started = time.monotonic()
        export(server.base, tmp_path / "export", values(tmp_path, BULK_POLL_MAX_SECONDS=0.5))
        polls = [at for at, _, _, _ in server.asked("GET", "/fhir/jobs/")]
        assert len(polls) == 3 and all(later - earlier >= 0.45 for earlier, later in zip(polls, polls[1:],
                                                                                            strict=False))
        assert time.monotonic() - started < 60


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_in_seconds(seconds):
    class Answer:
        headers = {"Retry-After": str(seconds)}

    assert retry_after(Answer()) == seconds  # type: ignore[arg-type]


@given(st.integers(min_value=-3600, max_value=86_400))
def test_retry_after_as_an_http_date(offset):
    now = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)

    class Answer:
        headers = {"Retry-After": email.utils.format_datetime(now + dt.timedelta(seconds=offset),
                                                             usegmt=True)}

    assert retry_after(Answer(), now=now.timestamp()) == max(0, offset)  # type: ignore[arg-type]


@given(st.text())
def test_every_message_is_one_line(text):
    flat = one_line(text)
    assert "\n" not in flat and "\r" not in flat and len(flat) <= 300


def test_a_failed_export_is_one_line_naming_the_servers_outcome(tmp_path):
    _, public = key_pair("ES384")
    failure = (500, outcome("export node ran out of disk\nretry tomorrow"))
    with BulkServer(population(), public_jwk=public, status_failure=failure) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path))
        message = one_line_error(excinfo)
        assert "failed (500" in message and "export node ran out of disk retry tomorrow" in message
        assert not (tmp_path / "export").exists() and not (tmp_path / "export.partial").exists()


@pytest.mark.parametrize("code", [404, 410])
def test_a_deleted_or_expired_job_is_one_line(tmp_path, code):
    _, public = key_pair("ES384")
    failure = (code, outcome("job-1 expired"))
    with BulkServer(population(), public_jwk=public, status_failure=failure) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path))
        message = one_line_error(excinfo)
        assert f"is gone ({code}: deleted or expired): job-1 expired" in message


def test_a_refused_kick_off_is_one_line(tmp_path):
    _, public = key_pair("ES384")
    refusal = (403, outcome("client cds-gaps-test may not export Group data", "forbidden"))
    with BulkServer(population(), public_jwk=public, kickoff_answer=refusal) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path), group="g-1")
        message = one_line_error(excinfo)
        assert "kick-off" in message and "(403)" in message and "may not export Group data" in message
        assert "/fhir/Group/g-1/$export" in message


def test_an_export_that_never_finishes_stops_at_the_deadline(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, pending=None, retry_after="1") as server:
        started = time.monotonic()
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path, BULK_EXPORT_SECONDS=2.5))
        took = time.monotonic() - started
        message = one_line_error(excinfo)
        assert "longer than 2.5 s (CDS_BULK_EXPORT_SECONDS)" in message
        assert 2.0 <= took < 60
        assert server.deleted  # the job is cancelled
        assert not (tmp_path / "export").exists()


def test_no_token_goes_with_the_downloads_when_the_manifest_needs_none(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, requires_token=False) as server:
        export(server.base, tmp_path / "export", values(tmp_path))
        downloads = server.asked("GET", "/files/")
        assert len(downloads) == 5 and all(auth is None for *_, auth in downloads)
        assert all(auth for *_, auth in server.asked("GET", "/fhir/jobs/"))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [((401, {"error": "invalid_client", "error_description": "unknown key"}),
      "refused the client (401): invalid_client: unknown key"),
     ((200, {"token_type": "bearer", "expires_in": 300}), "answered without an access token"),
     ((200, {"access_token": "abcdefghijklmnopqrstuvwxyz", "token_type": "mac"}),
      "answered a token_type of 'mac', not 'bearer'"),
     ((200, "<html>sign in</html>"), "answered without an access token")],
)
def test_a_bad_token_endpoint_answer_is_one_line(tmp_path, answer, expected):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, token_answer=answer) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path))
        message = one_line_error(excinfo)
        assert expected in message and "abcdefghijklmnopqrstuvwxyz" not in message
        assert server.asked("GET", "/fhir/Patient/") == []  # no kick-off without a token


def test_an_assertion_signed_with_another_key_is_refused(tmp_path):
    _, rsa_public = key_pair("RS384")
    with BulkServer(population(), public_jwk=rsa_public) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path, "ES384"))
        assert "refused the client (401): invalid_client" in one_line_error(excinfo)


def test_a_token_file_is_sent_and_never_repeated(tmp_path):
    _, public = key_pair("ES384")
    token = "given-bearer-token-0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with BulkServer(population(), public_jwk=public) as server:
        server.tokens.add(token)
        export(server.base, tmp_path / "export", settings.load({}, environ={}), token_file=token_file)
        assert server.assertions == []
        assert {auth for *_, auth in server.requests} == {f"Bearer {token}"}
    with BulkServer(population(), public_jwk=public) as server:  # a token the server does not know
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "again", settings.load({}, environ={}), token_file=token_file)
        message = one_line_error(excinfo)
        assert "(401): no valid bearer token" in message and token not in message


def test_the_token_is_never_sent_to_another_origin(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public, file_host="localhost") as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path))
        assert "another origin than the FHIR server's; the token is not sent there" in one_line_error(excinfo)
        assert server.asked("GET", "/files/") == []
    with BulkServer(population(), public_jwk=public, file_host="localhost", requires_token=False) as server:
        export(server.base, tmp_path / "open", values(tmp_path))  # files that need no token: fetched
        assert len(server.asked("GET", "/files/")) == 5


@pytest.mark.parametrize("rtype", ["../Patient", "Patient/../../x", "", "patient", "Pa tient"])
def test_a_manifest_type_that_is_no_resource_type_name_is_refused(tmp_path, rtype):
    _, public = key_pair("ES384")
    extra = [{"type": rtype, "url": "http://127.0.0.1:9/files/x.ndjson"}]
    with BulkServer(population(), public_jwk=public, manifest_extra=extra) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path))
        assert "manifest names a file without a resource type" in one_line_error(excinfo)
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob("*.ndjson"))


def test_a_file_larger_than_the_setting_fails_the_export(tmp_path):
    _, public = key_pair("ES384")
    with BulkServer(population(), public_jwk=public) as server:
        with pytest.raises(BulkExportError) as excinfo:
            export(server.base, tmp_path / "export", values(tmp_path, BULK_MAX_FILE_BYTES=200))
        assert "larger than 200 bytes (CDS_BULK_MAX_FILE_BYTES)" in one_line_error(excinfo)
        assert not (tmp_path / "export").exists() and not (tmp_path / "export.partial").exists()


def test_a_folder_holding_files_is_not_overwritten(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "1.Patient.ndjson").write_text("{}\n")
    with pytest.raises(BulkExportError) as excinfo:
        export("http://127.0.0.1:9/fhir", folder, settings.load({}, environ={}))
    assert "already holds files" in one_line_error(excinfo)
    assert (folder / "1.Patient.ndjson").read_text() == "{}\n"


def test_a_server_that_is_not_there_is_one_line(tmp_path):
    with BulkServer([]) as server:
        base = server.base
    with pytest.raises(BulkExportError) as excinfo:
        export(base, tmp_path / "export", settings.load({}, environ={}))
    assert "cannot reach" in one_line_error(excinfo)


# -- the command: cds gaps --fhir-server ---------------------------------------------------------------------


def gaps(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    code = main(["gaps", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err.splitlines()


@pytest.fixture
def smart_client(tmp_path, monkeypatch) -> dict[str, Any]:
    private, public = key_pair("ES384")
    key_file = tmp_path / "client.jwk.json"
    key_file.write_text(json.dumps(private))
    monkeypatch.setenv("CDS_BULK_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("CDS_BULK_KEY_FILE", str(key_file))
    return public


def test_cds_gaps_from_a_fhir_server_writes_the_gaps_of_the_export(tmp_path, capsys, smart_client):
    errors = [outcome("Patient/bulk-9 could not be read")]
    out = tmp_path / "out"
    with BulkServer(population(), public_jwk=smart_client, pending=1, errors=errors) as server:
        code, stdout, stderr = gaps(["--fhir-server", server.base, "--out", str(out), "--at", "2026-11-22",
                                     "--workers", "1"], capsys)
        token = next(iter(server.tokens))
    assert code == 0, stderr
    assert "3 patient(s) read: 3 in scope" in stdout
    assert any("in progress (step 1 of many)" in line for line in stderr)
    bulk = [line for line in stderr if line.startswith("bulk export: 3 Patient")]
    assert bulk == ["bulk export: 3 Patient, 9 Observation, 3 MedicationRequest, 1 Medication in 5 file(s) "
                    f"in {out / 'export'}; the server reported 1 error(s): Patient/bulk-9 could not be read"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bulkExport"]["errors"] == {"count": 1, "names": ["Patient/bulk-9 could not be read"]}
    assert summary["bulkExport"]["server"] == server.base and summary["exportErrors"] == 1
    assert summary["patients"]["read"] == 3
    issues = [json.loads(line) for line in (out / "gaps.ndjson").read_text().splitlines()]
    assert issues and all(i["resourceType"] == "DetectedIssue" for i in issues)
    assert {i["patient"]["reference"] for i in issues} == {f"Patient/bulk-{n}" for n in range(3)}
    assert (out / "export" / "manifest.json").is_file() and (out / "report.html").is_file()
    assert token not in stdout and not any(token in line for line in stderr)


def test_cds_gaps_stops_in_one_line_with_exit_2_on_a_failed_export(tmp_path, capsys, smart_client):
    failure = (500, outcome("export node ran out of disk"))
    with BulkServer(population(), public_jwk=smart_client, status_failure=failure) as server:
        code, stdout, stderr = gaps(["--fhir-server", server.base, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and stdout == ""
    [error] = [line for line in stderr if not line.startswith("bulk export:")]
    assert error.startswith("cds: error: the bulk export failed (500 from ")
    assert error.endswith(": export node ran out of disk")
    assert not (tmp_path / "out" / "gaps.ndjson").exists()


def test_cds_gaps_stops_at_the_export_deadline_with_exit_2(tmp_path, capsys, smart_client, monkeypatch):
    monkeypatch.setenv("CDS_BULK_EXPORT_SECONDS", "2")
    with BulkServer(population(), public_jwk=smart_client, pending=None, retry_after="1") as server:
        code, _, stderr = gaps(["--fhir-server", server.base, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    [error] = [line for line in stderr if not line.startswith("bulk export:")]
    assert error == ("cds: error: the bulk export took longer than 2 s (CDS_BULK_EXPORT_SECONDS) while "
                     "waiting for it to finish")


@pytest.mark.parametrize(
    ("argv", "said"),
    [([], "give the EXPORT folder or --fhir-server URL"),
     (["somewhere", "--fhir-server", "http://127.0.0.1:9/fhir"],
      "give the EXPORT folder or --fhir-server URL, not both"),
     (["somewhere", "--group", "g-1"], "--group goes with --fhir-server"),
     (["somewhere", "--token-file", "t"], "--token-file goes with --fhir-server")],
)
def test_cds_gaps_takes_an_export_folder_or_a_fhir_server(tmp_path, capsys, argv, said):
    code, stdout, stderr = gaps([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and stdout == ""
    assert stderr == [f"cds: error: {said} (see: cds gaps --help)"]

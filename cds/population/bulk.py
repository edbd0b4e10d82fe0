"""A FHIR Bulk Data export, fetched from the FHIR server into an export folder (``cds gaps --fhir-server``).

FHIR Bulk Data Access IG v2, as a client:

1. kick-off: ``GET [base]/Patient/$export`` (or ``[base]/Group/ID/$export``) with ``_type`` the four
   resource types the rules read, ``Accept: application/fhir+json``, ``Prefer: respond-async``; the server
   answers 202 with the status URL in ``Content-Location``;
2. status: polled until it answers 200 with the manifest, each wait the server's ``Retry-After`` (seconds
   or an HTTP date; at most ``CDS_BULK_POLL_MAX_SECONDS``), else 1 s doubling; its ``X-Progress`` is shown;
3. download: each ``output`` file streamed to ``N.Type.ndjson`` (at most ``CDS_BULK_MAX_FILE_BYTES``), with
   the access token when the manifest's ``requiresAccessToken`` is true, and only to the FHIR server's own
   origin; the ``error`` files (OperationOutcome NDJSON) to ``errors/``, their issues counted and named.

The folder gets a ``manifest.json`` naming the local files, then ``cds.population.run.run_gaps`` reads it.

Authentication: a bearer token read from a file (``--token-file``), or SMART Backend Services: a client
assertion (RS384 or ES384, ``iss`` = ``sub`` = ``CDS_BULK_CLIENT_ID``, ``aud`` the token endpoint found in
``[base]/.well-known/smart-configuration``, a fresh ``jti``, ``exp`` 5 minutes on) signed with the key in
``CDS_BULK_KEY_FILE`` and posted with ``grant_type=client_credentials`` for ``CDS_BULK_SCOPE``; a new token
is asked for when the one held is about to expire. Neither: no token is sent. Tokens and assertions are
never printed or logged.

Every wait has a deadline: each request ``CDS_BULK_REQUEST_SECONDS`` (a whole exchange, connect to last
byte, downloads: each read), the whole export ``CDS_BULK_EXPORT_SECONDS`` (the job is then cancelled with a
DELETE). A refused kick-off, a failed or vanished job, a bad token endpoint answer: ``BulkExportError``,
one line naming the server's OperationOutcome text (the command line: exit status 2).
"""

from __future__ import annotations

import email.utils
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import jwt
import requests

from cds.auth.client_token import KeyFileError, default_alg, load_private_jwk
from cds.deadline import Deadline, deadline_session
from cds.errors import CdsError

#: the resource types asked for: what the rules read
TYPES = ("Patient", "Observation", "MedicationRequest", "Medication")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 300
SIGNING_ALGS = ("RS384", "ES384")
#: a token is asked for again when it has less than this many seconds left
TOKEN_MARGIN_SECONDS = 30.0
#: distinct error messages named in the summary (the count covers them all)
MAX_ERROR_NAMES = 20
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

Say = Callable[[str], None]


class BulkExportError(CdsError):
    """The export could not be fetched: one line naming why (the server's own words where it gave some)."""

    code = "exception"


@dataclass
class ExportResult:
    """What was fetched: the folder, files and resources by type, and the export's own errors."""

    folder: Path
    transaction_time: str | None
    files: dict[str, int] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    error_count: int = 0
    error_names: list[str] = field(default_factory=list)
    polls: int = 0
    seconds: float = 0.0

    def summary(self, server: str, group: str | None) -> dict[str, Any]:
        """The export as the run's summary keeps it: types in the order asked for, then any other by name."""
        def order(kv: tuple[str, int]) -> tuple[int, str]:
            return (TYPES.index(kv[0]) if kv[0] in TYPES else len(TYPES), kv[0])

        return {"server": shown_url(server), "group": group, "transactionTime": self.transaction_time,
                "files": dict(sorted(self.files.items(), key=order)),
                "resources": dict(sorted(self.resources.items(), key=order)), "polls": self.polls,
                "seconds": round(self.seconds, 1),
                "errors": {"count": self.error_count, "names": self.error_names}}


def one_line(text: str, limit: int = 300) -> str:
    """Text on one line (control characters and runs of space as one space), at most ``limit`` characters."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def shown_url(url: str) -> str:
    """A URL as named in a message: scheme, host and path, never the query (it may carry a signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def outcome_text(response: requests.Response) -> str:
    """The words of an error answer: an OperationOutcome's issues, an OAuth error, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text[:300]) or "(no body)"
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return issues_text(body) or "an OperationOutcome without issues"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        described = body.get("error_description")
        return one_line(body["error"] + (f": {described}" if isinstance(described, str) else ""))
    return one_line(json.dumps(body)[:300])


def issues_text(outcome: Mapping[str, Any]) -> str:
    """An OperationOutcome's issues in one line: each one's diagnostics, else its details' text, else code."""
    words = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue["details"] if isinstance(issue.get("details"), dict) else {}
        said = issue.get("diagnostics") or details.get("text") or issue.get("code")
        if isinstance(said, str) and said.strip():
            words.append(said)
    return one_line("; ".join(words))


def retry_after(response: requests.Response, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number of seconds or an HTTP date), or None."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class BulkSettings:
    client_id: str
    key_file: str
    scope: str
    export_seconds: float
    request_seconds: float
    poll_max_seconds: float
    max_file_bytes: int

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BulkSettings:
        return cls(values["BULK_CLIENT_ID"], values["BULK_KEY_FILE"], values["BULK_SCOPE"],
                   float(values["BULK_EXPORT_SECONDS"]), float(values["BULK_REQUEST_SECONDS"]),
                   float(values["BULK_POLL_MAX_SECONDS"]), int(values["BULK_MAX_FILE_BYTES"]))


class _Client:
    """The HTTP side: every request inside its own deadline and the export's, the access token added."""

    def __init__(self, base: str, settings: BulkSettings, token: str | None, say: Say):
        self.base, self.settings, self.say = base, settings, say
        self.session = deadline_session()
        self.started = time.monotonic()
        self.ends = self.started + settings.export_seconds
        self.fixed_token = token
        self.key: dict[str, Any] | None = None
        if token is None and settings.client_id:
            self.key = _signing_key(settings)
        self.token: str | None = None
        self.token_ends = 0.0

    # -- time ----------------------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def out_of_time(self, doing: str) -> BulkExportError:
        return BulkExportError(f"the bulk export took longer than {self.settings.export_seconds:g} s "
                               f"(CDS_BULK_EXPORT_SECONDS) while {doing}")

    def request(self, method: str, url: str, doing: str, *, headers: Mapping[str, str] | None = None,
                data: Mapping[str, str] | None = None, auth: bool = True) -> requests.Response:
        """One whole exchange (body read) within CDS_BULK_REQUEST_SECONDS and the export's deadline."""
        seconds = min(self.settings.request_seconds, self.remaining())
        if seconds <= 0:
            raise self.out_of_time(doing)
        sent = dict(headers or {})
        if auth:
            sent.update(self.authorization())
        with Deadline(seconds) as deadline:
            try:
                response = self.session.request(method, url, headers=sent, data=data,
                                                timeout=(seconds, seconds))
                response.content  # noqa: B018 - the body is read inside the deadline
            except requests.RequestException as exc:
                raise self._failed(doing, url, exc, deadline.expired, seconds) from None
        return response

    def _failed(self, doing: str, url: str, exc: Exception, expired: bool, seconds: float) -> BulkExportError:
        if expired or isinstance(exc, requests.Timeout):
            if self.remaining() <= 0:
                return self.out_of_time(doing)
            return BulkExportError(f"{doing}: {shown_url(url)} did not answer within {seconds:g} s "
                                   "(CDS_BULK_REQUEST_SECONDS)")
        reason = type(exc).__name__ if isinstance(exc, requests.ConnectionError) else one_line(str(exc), 120)
        return BulkExportError(f"{doing}: cannot reach {shown_url(url)} ({reason})")

    # -- the access token ------------------------------------------------------------------------------------

    def authorization(self) -> dict[str, str]:
        if self.fixed_token is not None:
            return {"Authorization": f"Bearer {self.fixed_token}"}
        if self.key is None:
            return {}
        if self.token is None or time.monotonic() > self.token_ends - TOKEN_MARGIN_SECONDS:
            self.token = None
            self.token, self.token_ends = self._new_token()
        return {"Authorization": f"Bearer {self.token}"}

    def _new_token(self) -> tuple[str, float]:
        assert self.key is not None
        endpoint = self._token_endpoint()
        now = int(time.time())
        claims = {"iss": self.settings.client_id, "sub": self.settings.client_id, "aud": endpoint,
                  "jti": str(uuid.uuid4()), "iat": now, "exp": now + ASSERTION_SECONDS}
        alg = default_alg(self.key)
        assertion = jwt.encode(claims, jwt.PyJWK(self.key, algorithm=alg).key, algorithm=alg,
                               headers={"kid": str(self.key["kid"]), "typ": "JWT"})
        form = {"grant_type": "client_credentials", "scope": self.settings.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
        asked = time.monotonic()
        response = self.request("POST", endpoint, "asking the token endpoint for an access token",
                                headers={"Accept": "application/json"}, data=form, auth=False)
        where = shown_url(endpoint)
        if response.status_code != 200:
            raise BulkExportError(f"the token endpoint {where} refused the client "
                                  f"({response.status_code}): {outcome_text(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token.strip()):
            raise BulkExportError(f"the token endpoint {where} answered without an access token")
        kind = body.get("token_type") if isinstance(body, dict) else None
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise BulkExportError(f"the token endpoint {where} answered a token_type of "
                                  f"{one_line(str(kind), 40)!r}, not 'bearer'")
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        return token.strip(), asked + seconds

    def _token_endpoint(self) -> str:
        url = f"{self.base}/.well-known/smart-configuration"
        response = self.request("GET", url, "reading the SMART configuration",
                                headers={"Accept": "application/json"}, auth=False)
        if response.status_code != 200:
            raise BulkExportError(f"{shown_url(url)} answered {response.status_code}: "
                                  f"{outcome_text(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        endpoint = body.get("token_endpoint") if isinstance(body, dict) else None
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https"):
            raise BulkExportError(f"{shown_url(url)} names no token_endpoint (an http or https URL)")
        return endpoint

    # -- downloads -------------------------------------------------------------------------------------------

    def download(self, url: str, path: Path, *, with_token: bool, doing: str) -> int:
        """Stream ``url`` to ``path``; the number of lines written. At most CDS_BULK_MAX_FILE_BYTES."""
        if self.remaining() <= 0:
            raise self.out_of_time(doing)
        headers = {"Accept": "application/fhir+ndjson"}
        if with_token:
            headers.update(self.authorization())
        seconds = self.settings.request_seconds
        limit = self.settings.max_file_bytes
        size = lines = 0
        last = b"\n"
        with Deadline(self.remaining()) as deadline:
            try:
                with self.session.get(url, headers=headers, stream=True,
                                      timeout=(seconds, seconds)) as answer:
                    if answer.status_code != 200:
                        answer.content  # noqa: B018 - the error's body, to name it
                        raise BulkExportError(f"{doing}: {shown_url(url)} answered {answer.status_code}: "
                                              f"{outcome_text(answer)}")
                    with path.open("wb") as out:
                        for chunk in answer.iter_content(1 << 16):
                            size += len(chunk)
                            if size > limit:
                                raise BulkExportError(
                                    f"{doing}: {shown_url(url)} is larger than {limit} bytes "
                                    "(CDS_BULK_MAX_FILE_BYTES)")
                            out.write(chunk)
                            lines += chunk.count(b"\n")
                            last = chunk[-1:] or last
            except requests.RequestException as exc:
                raise self._failed(doing, url, exc, deadline.expired, seconds) from None
        return lines + (0 if last == b"\n" else 1)

    def close(self) -> None:
        self.session.close()


def _signing_key(settings: BulkSettings) -> dict[str, Any]:
    if not settings.key_file:
        raise BulkExportError("CDS_BULK_CLIENT_ID is set but CDS_BULK_KEY_FILE is not: SMART Backend "
                              "Services needs the private key signing the client assertion")
    try:
        key = load_private_jwk(settings.key_file)
    except KeyFileError as exc:
        raise BulkExportError(f"{exc} (CDS_BULK_KEY_FILE)") from None
    if default_alg(key) not in SIGNING_ALGS:
        raise BulkExportError(f"key file {settings.key_file} (CDS_BULK_KEY_FILE): the key signs "
                              f"{default_alg(key)}; SMART Backend Services asks for RS384 or ES384")
    try:
        jwt.PyJWK(key, algorithm=default_alg(key))
    except jwt.PyJWTError as exc:
        raise BulkExportError(f"key file {settings.key_file} (CDS_BULK_KEY_FILE): "
                              f"{one_line(str(exc))}") from None
    return key


def read_token_file(path: str | Path) -> str:
    """The bearer token in ``path`` (white space around it ignored): one word, at least 16 characters."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BulkExportError(f"token file {path}: cannot read: {reason}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise BulkExportError(f"token file {path}: expected one bearer token of at least 16 characters, "
                              "without spaces")
    return token


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def kickoff_url(base: str, group: str | None) -> str:
    if group is not None and not _FHIR_ID.fullmatch(group):
        raise BulkExportError(f"--group {one_line(group, 80)!r} is not a FHIR id (1 to 64 letters, digits, "
                              "'-' and '.')")
    where = f"Group/{quote(group, safe='')}" if group is not None else "Patient"
    return f"{base}/{where}/$export?_type={','.join(TYPES)}"


def export(base: str, folder: Path, values: Mapping[str, Any], *, group: str | None = None,
           token_file: str | Path | None = None, say: Say | None = None) -> ExportResult:
    """Run a Bulk Data export of the server at ``base`` into ``folder`` (created; it must not hold files).

    Raises ``BulkExportError`` (one line) when the export cannot be had; ``folder`` is then left as it was.
    """
    base = base.rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        raise BulkExportError(f"--fhir-server {one_line(base, 120)!r} is not an http or https URL")
    if folder.exists() and any(folder.iterdir()):
        raise BulkExportError(f"{folder} already holds files; give another --out, or remove it")
    settings = BulkSettings.from_values(values)
    say = say or (lambda _line: None)
    token = read_token_file(token_file) if token_file else None
    url = kickoff_url(base, group)
    client = _Client(base, settings, token, say)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        status_url = _kick_off(client, url)
        try:
            manifest, polls = _wait(client, status_url)
        except BulkExportError:
            _cancel(client, status_url)
            raise
        partial.mkdir(parents=True)
        result = _download(client, manifest, partial, base)
        result.polls = polls
        _cancel(client, status_url)  # done with the job: the server may delete its files
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        client.close()
    if folder.exists():
        folder.rmdir()
    partial.rename(folder)
    result.folder = folder
    result.seconds = time.monotonic() - client.started
    return result


def _kick_off(client: _Client, url: str) -> str:
    client.say(f"bulk export: kick-off {shown_url(url)}")
    response = client.request("GET", url, "starting the bulk export",
                              headers={"Accept": "application/fhir+json", "Prefer": "respond-async"})
    if response.status_code != 202:
        raise BulkExportError(f"the bulk export kick-off {shown_url(url)} was refused "
                              f"({response.status_code}): {outcome_text(response)}")
    location = response.headers.get("Content-Location")
    if not location:
        raise BulkExportError(f"the bulk export kick-off {shown_url(url)} answered 202 without a "
                              "Content-Location (the status URL)")
    status_url = urljoin(url, location)
    if urlsplit(status_url).scheme not in ("http", "https"):
        raise BulkExportError("the bulk export's status URL is not an http or https URL")
    return status_url


def _wait(client: _Client, status_url: str) -> tuple[dict[str, Any], int]:
    """Poll the status URL until the manifest comes; the manifest and the number of polls."""
    backoff, polls = 1.0, 0
    cap = client.settings.poll_max_seconds
    while True:
        if client.remaining() <= 0:
            raise client.out_of_time("waiting for it to finish")
        response = client.request("GET", status_url, "checking the bulk export's status",
                                  headers={"Accept": "application/json"})
        polls += 1
        code = response.status_code
        if code == 200:
            return _manifest(response, status_url), polls
        if code in (202, 429):
            asked = retry_after(response)
            wait = min(cap, asked if asked is not None else backoff)
            backoff = min(cap, backoff * 2)
            progress = one_line(response.headers.get("X-Progress") or "", 80)
            elapsed = time.monotonic() - client.started
            client.say(f"bulk export: {'in progress' if code == 202 else 'asked to wait (429)'}"
                       f"{f' ({progress})' if progress else ''}, {elapsed:.0f} s so far; next check in "
                       f"{wait:g} s")
            time.sleep(max(0.0, min(wait, client.remaining())))
            continue
        if code in (404, 410):
            raise BulkExportError(f"the bulk export job {shown_url(status_url)} is gone ({code}: deleted or "
                                  f"expired): {outcome_text(response)}")
        raise BulkExportError(f"the bulk export failed ({code} from {shown_url(status_url)}): "
                              f"{outcome_text(response)}")


def _manifest(response: requests.Response, status_url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("output"), list):
        raise BulkExportError(f"the bulk export's manifest from {shown_url(status_url)} is not a JSON object "
                              "with an 'output' list")
    for item in [*body["output"], *(body.get("error") or [])]:
        if not (isinstance(item, dict) and isinstance(item.get("type"), str)
                and isinstance(item.get("url"), str) and _TYPE_NAME.fullmatch(item["type"])
                and urlsplit(item["url"]).scheme in ("http", "https")):
            raise BulkExportError("the bulk export's manifest names a file without a resource type or an "
                                  f"http(s) url: {one_line(json.dumps(item), 120)}")
    if not isinstance(body.get("error") or [], list):
        raise BulkExportError("the bulk export's manifest has an 'error' that is not a list")
    return body


def _download(client: _Client, manifest: dict[str, Any], folder: Path, base: str) -> ExportResult:
    with_token = manifest.get("requiresAccessToken") is True
    result = ExportResult(folder, manifest.get("transactionTime")
                          if isinstance(manifest.get("transactionTime"), str) else None)
    local: dict[str, list[dict[str, Any]]] = {"output": [], "error": []}
    names: dict[str, int] = {}
    for kind in ("output", "error"):
        where = folder if kind == "output" else folder / "errors"
        where.mkdir(exist_ok=True)
        counters: dict[str, int] = {}
        items = manifest.get(kind) or []
        for item in items:
            url, rtype = item["url"], item["type"]
            if with_token and not _same_origin(url, base):
                raise BulkExportError(f"the manifest asks for the access token on {shown_url(url)}, another "
                                      "origin than the FHIR server's; the token is not sent there")
            counters[rtype] = counters.get(rtype, 0) + 1
            name = f"{counters[rtype]}.{rtype}.ndjson"
            client.say(f"bulk export: downloading {kind} file {len(local[kind]) + 1} of {len(items)} "
                       f"({rtype})")
            lines = client.download(url, where / name, with_token=with_token,
                                    doing=f"downloading the {rtype} file {name}")
            relative = name if kind == "output" else f"errors/{name}"
            local[kind].append({"type": rtype, "url": relative, "count": lines})
            if kind == "output":
                result.files[rtype] = result.files.get(rtype, 0) + 1
                result.resources[rtype] = result.resources.get(rtype, 0) + lines
            else:
                _count_errors(where / name, result, names)
    result.error_names = [f"{text} (x{n})" if n > 1 else text
                          for text, n in sorted(names.items(), key=lambda kv: -kv[1])[:MAX_ERROR_NAMES]]
    written = {k: v for k, v in manifest.items() if k not in ("output", "error")}
    written.update(local)
    (folder / "manifest.json").write_text(json.dumps(written, indent=2), encoding="utf-8")
    return result


def _count_errors(path: Path, result: ExportResult, names: dict[str, int]) -> None:
    """Count the OperationOutcomes of an error file, each named by its issues' words."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            result.error_count += 1
            try:
                outcome = json.loads(line)
            except ValueError:
                text = "an error line that is not JSON"
            else:
                said = issues_text(outcome) if isinstance(outcome, dict) else ""
                text = said or "an OperationOutcome without issues"
            text = one_line(text, 160)
            names[text] = names.get(text, 0) + 1


def _cancel(client: _Client, status_url: str) -> None:
    """Ask the server to delete the job (after a failure, or when its files are in); any answer will do."""
    if client.remaining() <= 0:
        client.ends = time.monotonic() + min(5.0, client.settings.request_seconds)  # a last short request
    try:
        client.request("DELETE", status_url, "cancelling the bulk export job")
    except BulkExportError:
        pass

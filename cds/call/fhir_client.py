"""The FHIR client: fetches the prefetch data a client did not send, from the request's ``fhirServer``.

The request controls ``fhirServer``, so it is checked against ``CDS_FHIR_SERVER_ALLOWLIST`` before any
request is made (scheme, host, port and path prefix compared as parsed parts, never as a string prefix).
A URL whose path has a dot segment (``.``, ``..``) or an encoded separator or dot (``%2F``, ``%5C``,
``%2E``, a backslash) is refused outright, and every URL requested is built again from the parts that were
compared, so what is checked is what is sent (``next`` links included).
Every GET has a connect and a read timeout, and one overall deadline from connect to the last byte of the
answer (``CDS_FHIR_RESPONSE_SECONDS``, ``cds.deadline``: a server dripping its status line, headers or body
is cut off when it passes); idempotent GETs are retried a bounded number of times on
429/502/503/504 with exponential backoff (``Retry-After`` honoured up to a cap); searches follow ``next``
links up to a cap on pages and resources. Any failure raises ``FhirServerError`` (a ``DataUnavailable``:
HTTP 412) naming the key.

Inside a hook call the call's budget is the thread's ``cds.deadline.CallLimit``: before every GET (each page,
each retry) it is checked and the GET counted, the connect and read timeouts and the GET's deadline are cut
to what the call has left, and a back-off never sleeps past it. A GET that the call's budget cut short, or
one the budget has no time for, raises the call's ``BudgetExceeded`` (503, naming the budget), not a 412.

The bearer token from ``fhirAuthorization`` is sent only to URLs under ``fhirServer`` and never logged; log
lines carry the key, the resource type, the status and the time taken, never a query value or an id.

The client is the call layer's (it does the network I/O that gathers prefetch); the FHIR stage ``cds.fhir``
below it stays pure. Its log lines keep the logger name ``cds.fhir.client``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from cds.deadline import CallLimit, Deadline, current_call_limit, deadline_session
from cds.errors import ConfigurationError, FhirServerError, FhirServerNotAllowed
from cds.fhir.gathered import next_link
from cds.hooks.envelope import HookRequest
from cds.settings import default as setting_default

log = logging.getLogger("cds.fhir.client")
# urllib3 logs every request line at DEBUG, query values (patient ids) included: keep it above DEBUG.
_URLLIB3 = logging.getLogger("urllib3.connectionpool")
_URLLIB3.setLevel(max(_URLLIB3.level, logging.INFO))

RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_PORTS = {"http": 80, "https": 443}
ACCEPT = "application/fhir+json"
#: in a URL path: an encoded separator or dot, or a backslash (some servers take it for a separator)
_AMBIGUOUS = re.compile(r"%(2[eEfF]|5[cC])|\\")


def plain_path(path: str) -> bool:
    """True when a URL path means the same to every server: no dot segment, no encoded separator or dot."""
    return not _AMBIGUOUS.search(path) and not any(seg in (".", "..") for seg in path.split("/"))


class Base(NamedTuple):
    """A URL reduced to what the allow-list compares: scheme, host, port and path segments."""

    scheme: str
    host: str
    port: int
    path: tuple[str, ...]

    def contains(self, other: Base) -> bool:
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and \
            other.path[:len(self.path)] == self.path

    @property
    def origin(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if default else f":{self.port}")

    @property
    def url(self) -> str:
        """The URL again, from the parts compared (no final '/')."""
        return self.origin + "".join(f"/{segment}" for segment in self.path)


def parse_base(url: str) -> Base | None:
    """``Base`` of an absolute http(s) URL, or ``None`` when it is not one (or has credentials in it, or a
    path that is not plain: see ``plain_path``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if not plain_path(parts.path):
        return None
    path = tuple(segment for segment in parts.path.split("/") if segment)
    return Base(scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme], path)


def parse_allowlist(entries: Iterable[str]) -> tuple[Base, ...]:
    bases = []
    for entry in entries:
        base = parse_base(entry)
        if base is None or urlsplit(entry.strip()).query:
            raise ConfigurationError(f"setting CDS_FHIR_SERVER_ALLOWLIST: {entry!r} is not an http(s) "
                                     "base URL")
        bases.append(base)
    return tuple(bases)


@dataclass(frozen=True)
class ClientSettings:
    allowlist: tuple[Base, ...] = ()
    connect_timeout: float = setting_default("FHIR_CONNECT_TIMEOUT")
    read_timeout: float = setting_default("FHIR_READ_TIMEOUT")
    retries: int = setting_default("FHIR_RETRIES")
    backoff: float = setting_default("FHIR_BACKOFF_SECONDS")
    retry_after_cap: float = setting_default("FHIR_RETRY_AFTER_CAP_SECONDS")
    max_pages: int = setting_default("FHIR_MAX_PAGES")
    max_resources: int = setting_default("FHIR_MAX_RESOURCES")
    response_seconds: float = setting_default("FHIR_RESPONSE_SECONDS")
    max_response_bytes: int = setting_default("FHIR_MAX_RESPONSE_BYTES")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ClientSettings:
        return cls(allowlist=parse_allowlist(values["FHIR_SERVER_ALLOWLIST"]),
                   connect_timeout=values["FHIR_CONNECT_TIMEOUT"], read_timeout=values["FHIR_READ_TIMEOUT"],
                   retries=values["FHIR_RETRIES"], backoff=values["FHIR_BACKOFF_SECONDS"],
                   retry_after_cap=values["FHIR_RETRY_AFTER_CAP_SECONDS"], max_pages=values["FHIR_MAX_PAGES"],
                   max_resources=values["FHIR_MAX_RESOURCES"],
                   response_seconds=values["FHIR_RESPONSE_SECONDS"],
                   max_response_bytes=values["FHIR_MAX_RESPONSE_BYTES"])


class FhirClient:
    """A ``cds.call.prefetch.Fetch`` over HTTP. ``session`` and ``sleep`` are injectable."""

    def __init__(self, settings: ClientSettings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.session = session or deadline_session()
        self.sleep = sleep

    # -- the Fetch protocol -------------------------------------------------------------------------------
    def __call__(self, request: HookRequest, key: str, query: str) -> Any:
        base = self._server(request)
        path = query.split("?", 1)[0].strip("/").split("/")
        if not plain_path(query.split("?", 1)[0]):
            raise FhirServerError("a prefetch query with a dot segment or an encoded separator was not sent",
                                  field=f"prefetch.{key}")
        url = f"{base.url}/{query.lstrip('/')}"
        if "?" not in query and len(path) == 2:  # a read: Type/id
            body = self._get(request, key, url, read=True)
            if body is not None and body.get("resourceType") != path[0]:
                raise FhirServerError(f"the FHIR server answered a {path[0]} read with a "
                                      f"{body.get('resourceType')}", field=f"prefetch.{key}")
            return body
        return self._pages(request, key, base, self._bundle(request, key, url))

    def complete(self, request: HookRequest, key: str, bundle: dict[str, Any]) -> dict[str, Any]:
        return self._pages(request, key, self._server(request), bundle)

    # -- internals ----------------------------------------------------------------------------------------
    def _server(self, request: HookRequest) -> Base:
        base = parse_base(request.fhir_server or "")
        if base is None or not any(allowed.contains(base) for allowed in self.settings.allowlist):
            shown = base.origin if base else "(not an http(s) URL)"
            raise FhirServerNotAllowed(f"fhirServer {shown} is not in this service's allow-list "
                                       "(CDS_FHIR_SERVER_ALLOWLIST); nothing was fetched", field="fhirServer")
        return base

    def _bundle(self, request: HookRequest, key: str, url: str) -> dict[str, Any]:
        body = self._get(request, key, url, read=False)
        if body is None or body.get("resourceType") != "Bundle":
            got = body.get("resourceType") if body else "nothing"
            raise FhirServerError(f"the FHIR server answered a search with {got}, not a Bundle",
                                  field=f"prefetch.{key}")
        return body

    def _pages(self, request: HookRequest, key: str, base: Base, first: dict[str, Any]) -> dict[str, Any]:
        cap_pages, cap_resources = self.settings.max_pages, self.settings.max_resources
        entries = list(first.get("entry") or [])
        pages, bundle = 1, first
        while (link := next_link(bundle)) is not None:
            if pages >= cap_pages:
                raise FhirServerError(f"the search has more than {cap_pages} pages (CDS_FHIR_MAX_PAGES); "
                                      "the data would be incomplete", field=f"prefetch.{key}")
            joined = urlsplit(urljoin(f"{base.url}/", link.strip()))
            target = parse_base(joined._replace(query="", fragment="").geturl())
            if target is None or not base.contains(target) or not plain_path(urlsplit(link.strip()).path):
                raise FhirServerError("a next link points outside fhirServer (or has a dot segment or an "
                                      "encoded separator in its path); it was not followed",
                                      field=f"prefetch.{key}")
            url = target.url + (f"?{joined.query}" if joined.query else "")
            bundle = self._bundle(request, key, url)
            entries += list(bundle.get("entry") or [])
            pages += 1
            if len(entries) > cap_resources:
                break
        if len(entries) > cap_resources:
            raise FhirServerError(f"the search returned more than {cap_resources} resources "
                                  "(CDS_FHIR_MAX_RESOURCES); the data would be incomplete",
                                  field=f"prefetch.{key}")
        return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}

    def _get(self, request: HookRequest, key: str, url: str, *, read: bool) -> dict[str, Any] | None:
        """GET one URL with retries; the JSON resource, ``None`` for a read answered 404, else an error."""
        where = f"prefetch.{key}"
        rtype = urlsplit(url).path.rstrip("/").split("/")[-2 if read else -1] or "(root)"
        headers = {"Accept": ACCEPT}
        auth = request.fhir_authorization or {}
        if auth.get("access_token"):
            headers["Authorization"] = f"Bearer {auth['access_token']}"
        limit = current_call_limit()
        attempt = 0
        while True:
            timeout = (self.settings.connect_timeout, self.settings.read_timeout)
            seconds = self.settings.response_seconds
            if limit is not None:
                stage = f"fetching {where} from the FHIR server"
                limit.check(stage)
                limit.count_request(stage)
                left = limit.remaining()
                if left is not None:  # no wait of this GET outlasts the call
                    left = max(left, 0.001)
                    timeout = (min(timeout[0], left), min(timeout[1], left))
                    seconds = min(seconds, left)
            with Deadline(seconds) as deadline:
                started = time.perf_counter()
                try:
                    response = self.session.get(url, headers=headers, timeout=timeout, allow_redirects=False,
                                                stream=True)
                except requests.RequestException as exc:
                    raise self._failed(exc, where, timeout, deadline) from exc
                status = response.status_code
                log.info("prefetch %s: GET %s %s -> HTTP %s in %.0f ms", key, "read" if read else "search",
                         rtype, status, (time.perf_counter() - started) * 1000)
                retry = status in RETRY_STATUSES and attempt < self.settings.retries
                if not retry:
                    try:
                        return self._body(response, where, read=read, deadline=deadline)
                    finally:
                        response.close()
                delay = self._delay(response, attempt)
                response.close()
            if limit is not None and (left := limit.remaining()) is not None and delay >= left:
                raise limit.exceeded(f"waiting to retry {where} at the FHIR server")
            log.debug("prefetch %s: retrying after %.2f s (attempt %d)", key, delay, attempt + 1)
            self.sleep(delay)
            attempt += 1

    def _failed(self, exc: requests.RequestException, where: str, timeout: tuple[float, float],
                deadline: Deadline) -> Exception:
        if _out_of_call_time():
            return _call_exceeded(where)
        if deadline.expired:
            return self._too_slow(where)
        if isinstance(exc, requests.ConnectTimeout):
            return FhirServerError(f"the FHIR server could not be reached within {timeout[0]:g} s",
                                   field=where, server_wide=True)
        if isinstance(exc, requests.ReadTimeout):
            return FhirServerError(f"the FHIR server did not answer within {timeout[1]:g} s", field=where,
                                   server_wide=True)
        if isinstance(exc, requests.ConnectionError):
            return FhirServerError("the FHIR server could not be reached (connection failed)", field=where,
                                   server_wide=True)
        return FhirServerError(f"the request to the FHIR server failed ({type(exc).__name__})", field=where,
                               server_wide=True)

    def _too_slow(self, where: str) -> Exception:
        if _out_of_call_time():  # the call's budget, not this GET's own deadline, cut it short
            return _call_exceeded(where)
        return FhirServerError("the FHIR server did not finish its answer within "
                               f"{self.settings.response_seconds:g} s (CDS_FHIR_RESPONSE_SECONDS)",
                               field=where, server_wide=True)

    def _delay(self, response: requests.Response, attempt: int) -> float:
        delay = self.settings.backoff * (2 ** attempt)
        header = response.headers.get("Retry-After")
        if header:
            try:
                delay = float(header)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(header)
                    delay = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    pass
        return max(0.0, min(delay, self.settings.retry_after_cap))

    def _content(self, response: requests.Response, where: str, deadline: Deadline) -> bytes:
        """The body, read in chunks: a server that trickles past the response budget, sends more than the
        size cap or breaks off mid-body is a failure, never a worker held indefinitely."""
        cap, chunks, size = self.settings.max_response_bytes, [], 0
        raw = response.raw
        if raw is None or not hasattr(raw, "read1"):  # a session that already holds the body
            chunks_in: Iterable[bytes] = [response.content]
        else:  # read1: whatever one socket read gives, so the deadline is checked as bytes trickle in
            chunks_in = iter(lambda: raw.read1(65536, decode_content=True), b"")
        try:
            for chunk in chunks_in:
                size += len(chunk)
                if size > cap:
                    raise FhirServerError(f"the FHIR server's answer is larger than {cap} bytes "
                                          "(CDS_FHIR_MAX_RESPONSE_BYTES)", field=where)
                if deadline.remaining() <= 0:
                    raise self._too_slow(where)
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.expired or deadline.remaining() <= 0:
                raise self._too_slow(where) from exc
            raise FhirServerError(f"the FHIR server's answer broke off ({type(exc).__name__})",
                                  field=where, server_wide=True) from exc
        if deadline.expired:  # cut off by the deadline: what came is not the whole answer
            raise self._too_slow(where)
        return b"".join(chunks)

    def _body(self, response: requests.Response, where: str, *, read: bool,
              deadline: Deadline) -> dict[str, Any] | None:
        status = response.status_code
        if read and status in (404, 410):
            return None
        if status in (401, 403):
            raise FhirServerError(f"the FHIR server refused access (HTTP {status})", field=where,
                                  server_wide=True)
        if not 200 <= status < 300:
            raise FhirServerError(f"the FHIR server answered HTTP {status}", field=where)
        try:
            body = json.loads(self._content(response, where, deadline))
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to decode
            raise FhirServerError("the FHIR server answered with something that is not JSON",
                                  field=where) from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirServerError("the FHIR server answered with JSON that is not a FHIR resource",
                                  field=where)
        if body["resourceType"] == "OperationOutcome":
            codes = sorted({str(i.get("code")) for i in body.get("issue") or [] if isinstance(i, dict)})
            raise FhirServerError("the FHIR server answered with an OperationOutcome "
                                  f"({', '.join(codes) or 'no issue'})", field=where)
        return body


def _out_of_call_time() -> bool:
    """Whether the hook call this thread serves has (all but) no time left: a wait cut to what it had left
    ends when it runs out."""
    limit = current_call_limit()
    left = limit.remaining() if limit is not None else None
    return left is not None and left <= 0.01


def _call_exceeded(where: str) -> Exception:
    limit: CallLimit | None = current_call_limit()
    assert limit is not None
    return limit.exceeded(f"fetching {where} from the FHIR server")

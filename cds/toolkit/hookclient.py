"""Talking to a CDS service as an EHR does: discovery, then signed hook calls. The I/O half of the toolkit.

Every call has a timeout, the ``requests.Session`` is injectable, and each call carries a freshly signed
client JWT (``cds.auth.client_token``) whose ``aud`` is the exact URL called. A failed exchange never
raises: the ``Exchange`` says what happened (HTTP status, JSON body, one-line error, latency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

from cds.auth.client_token import Signer

DEFAULT_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)


@dataclass
class Exchange:
    url: str
    status: int | None  # None when no HTTP answer came back
    body: Any
    latency_ms: float
    error: str | None = None  # a one-line description when the exchange failed

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def outcome_line(body: Any) -> str:
    """An OperationOutcome's diagnostics in one line (or a short note when the body is not one)."""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        parts = []
        for issue in body.get("issue") or []:
            if isinstance(issue, dict):
                text = (
                    issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
                )
                if text:
                    parts.append(str(text))
        return "; ".join(parts) or "OperationOutcome without diagnostics"
    if body in (None, ""):
        return "(no body)"
    return str(body)[:200].replace("\n", " ")


class HookClient:
    def __init__(
        self,
        base_url: str,
        *,
        signer: Signer | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.session = session or requests.Session()
        self.timeout = timeout

    def _headers(self, url: str, signed: bool = True) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if signed and self.signer is not None:
            headers.update(self.signer.headers(url))
        return headers

    def _send(self, method: str, url: str, body: Any = None, signed: bool = True) -> Exchange:
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, url, json=body, headers=self._headers(url, signed), timeout=self.timeout
            )
        except requests.Timeout:
            return Exchange(url, None, None, _ms(started), f"{method} {url}: timed out")
        except requests.RequestException as exc:
            return Exchange(
                url, None, None, _ms(started), f"{method} {url}: {type(exc).__name__}: {_first_line(exc)}"
            )
        latency = _ms(started)
        try:
            data: Any = response.json() if response.content else None
        except ValueError:
            data = response.text
        exchange = Exchange(url, response.status_code, data, latency)
        if not 200 <= response.status_code < 300:
            exchange.error = f"HTTP {response.status_code} from {method} {url}: {outcome_line(data)}"
        elif not isinstance(data, dict):
            exchange.error = f"{method} {url}: the answer is not a JSON object"
        return exchange

    def discovery(self) -> Exchange:
        return self._send("GET", f"{self.base_url}/cds-services")

    def health(self) -> Exchange:
        """``GET /health`` (unsigned: it is not a CDS Hooks endpoint): status and the rule pack in force."""
        return self._send("GET", f"{self.base_url}/health", signed=False)

    def call(self, service_id: str, body: dict[str, Any]) -> Exchange:
        return self._send("POST", f"{self.base_url}/cds-services/{service_id}", body)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""

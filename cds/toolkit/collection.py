"""A request collection for an HTTP client (Postman Collection Format v2.1, which Bruno, Insomnia and others
import), made from the same fixtures and by the same builder as ``cds request`` (``cds.toolkit.request``).
Pure code: the discovery document comes from the rule pack, as the service makes it.

The collection holds ``GET /health``, discovery, one hook call per fixture that has a sidecar (its hook,
its prefetch answered in full from the bundle) and a feedback call. Every call to the CDS endpoints
carries ``Authorization: Bearer {{clientToken}}``: a client JWT is good for one call and names the exact
URL called, and an HTTP client cannot sign ES384 on its own, so the token is made per call with
``cds dev-token --url <the URL>`` (development trust) or by the EHR's signer. ``{{baseUrl}}`` is the
service (default ``http://127.0.0.1:5000``); each hook call gets a fresh ``hookInstance`` from the
client's ``{{$guid}}``. The bundles' dates are as written (``cds request`` moves them to today; see each
request's description for the date its fixture was written for).

``cds collection`` writes it; ``docs/clients/bone-health-cds.postman_collection.json`` is the committed
copy, which ``tests/test_collection.py`` regenerates and compares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cds.hooks.services import discovery_document
from cds.rules.pack import RulePack
from cds.toolkit.request import build_hook_request, choose_service, load_bundle, load_sidecar

SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NAME = "Bone Health CDS"
BASE = "{{baseUrl}}"
TOKEN_HELP = ("Authorization: a client JWT for exactly this URL, good for one call: set the clientToken "
              "variable to the output of `cds dev-token --url <this request's URL>` before sending.")
JSON_HEADERS = [{"key": "Content-Type", "value": "application/json"},
                {"key": "Accept", "value": "application/json"}]


def _url(path: str) -> dict[str, Any]:
    parts = [p for p in path.strip("/").split("/") if p]
    return {"raw": f"{BASE}/{'/'.join(parts)}", "host": [BASE], "path": parts}


def _auth() -> dict[str, Any]:
    return {"type": "bearer", "bearer": [{"key": "token", "value": "{{clientToken}}", "type": "string"}]}


def _request(method: str, path: str, body: Any = None, *, signed: bool = True,
             description: str = "") -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "header": list(JSON_HEADERS) if body is not None else
                               [{"key": "Accept", "value": "application/json"}], "url": _url(path)}
    request["auth"] = _auth() if signed else {"type": "noauth"}
    if body is not None:
        request["body"] = {"mode": "raw", "raw": json.dumps(body, indent=2, ensure_ascii=False),
                           "options": {"raw": {"language": "json"}}}
    if description:
        request["description"] = description
    return request


def _fixtures(folders: Iterable[Path]) -> list[Path]:
    found = []
    for folder in folders:
        found += [p for p in sorted(Path(folder).rglob("*.json"))
                  if not p.name.endswith(".expected.json") and load_sidecar(p) is not None]
    return found


def hook_call_item(fixture: Path, discovery: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """One fixture as the hook call ``cds request`` would send (dates as written)."""
    sidecar = load_sidecar(fixture) or {}
    hook = sidecar["hook"]
    service = choose_service(discovery, hook)
    body = build_hook_request(load_bundle(fixture), hook, service)
    body["hookInstance"] = "{{$guid}}"  # a fresh one per send, as an EHR makes it
    here, top = fixture.resolve(), (root or Path.cwd()).resolve()
    shown = here.relative_to(top).as_posix() if here.is_relative_to(top) else fixture.name
    written = f" Written for {sidecar['at']}." if sidecar.get("at") else ""
    expected = ", ".join(c.get("rule", "?") for c in sidecar.get("cards", [])) or "none"
    description = (f"`{shown}` as `cds request` builds it ({hook}, prefetch full).{written} "
                   f"Expected cards: {expected}.\n\n{TOKEN_HELP}")
    return {"name": fixture.name[: -len(".json")],
            "request": _request("POST", f"/cds-services/{service['id']}", body, description=description)}


def build_collection(pack: RulePack, folders: Iterable[Path], root: Path | None = None) -> dict[str, Any]:
    """The collection: health, discovery, a hook call per fixture under ``folders``, feedback."""
    discovery = discovery_document(pack)
    calls = [hook_call_item(f, discovery, root) for f in _fixtures(folders)]
    feedback_service = choose_service(discovery, "order-sign")["id"]
    feedback = {"feedback": [{"card": "{{cardUuid}}", "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-22T12:00:00Z"}]}
    return {
        "info": {
            "name": NAME,
            "description": "Calls to the Bone Health CDS service, generated by `cds collection` from the "
            "fixtures `cds request` sends. " + TOKEN_HELP,
            "schema": SCHEMA,
        },
        "variable": [
            {"key": "baseUrl", "value": "http://127.0.0.1:5000", "type": "string"},
            {"key": "clientToken", "value": "", "type": "string"},
            {"key": "cardUuid", "value": "", "type": "string"},
        ],
        "item": [
            {"name": "Service", "item": [
                {"name": "health", "request": _request("GET", "/health", signed=False,
                                                        description="Open: no token needed.")},
                {"name": "discovery", "request": _request("GET", "/cds-services", description=TOKEN_HELP)},
                {"name": "feedback", "request": _request(
                    "POST", f"/cds-services/{feedback_service}/feedback", feedback,
                    description="Feedback on a card this service issued to the same client: set cardUuid "
                    "to a card's uuid from an answer of this service. " + TOKEN_HELP)},
            ]},
            {"name": "Hook calls", "item": calls},
        ],
    }


def collection_text(pack: RulePack, folders: Iterable[Path], root: Path | None = None) -> str:
    """The collection as the committed file holds it (stable: the same fixtures give the same text)."""
    return json.dumps(build_collection(pack, folders, root), indent=2, ensure_ascii=False) + "\n"

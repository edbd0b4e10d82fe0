"""Evaluating a fixture bundle offline (no server, no network): ``cds evaluate``.

The bundle goes through the same request builder as ``cds request``/``cds replay`` and the golden fixture
tests (``cds.toolkit.request.build_hook_request``), and the request through the service's own call path
(``cds.call.service.HookService``: envelope, prefetch, parsing, rules, cards), so what ``cds evaluate``
prints is what the service answers for that request. Offline, the record is sent as the fixture holds it,
misfiled results included (``misfiled=True``), as the golden tests do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cds.call.service import HookService
from cds.decide.evaluate import Evaluation, Evaluator
from cds.hooks.services import discovery_document, prefetch_templates
from cds.ledger.memory import MemoryLedger
from cds.rules.pack import RulePack
from cds.settings import default as setting_default
from cds.toolkit.request import (
    USER_ID,
    as_bundle,
    build_hook_request,
    choose_service,
    hook_context,
    load_bundle,
    split_bundle,
)

__all__ = ["USER_ID", "as_bundle", "evaluate_bundle", "hook_context", "hook_request", "load_bundle",
           "parse_at", "prefetch_from_record", "split_bundle"]


@dataclass
class Offline:
    request: dict[str, Any]  # the hook request sent
    response: dict[str, Any]  # the service's answer
    evaluation: Evaluation


def evaluate_bundle(bundle: dict[str, Any], hook: str, pack: RulePack, *, now: dt.datetime,
                    source_label: str = setting_default("SOURCE_LABEL")) -> Offline:
    """The hook request for ``bundle``, and the service's answer and evaluation for it at ``now``."""
    service = choose_service(discovery_document(pack), hook)
    body = build_hook_request(bundle, hook, service, misfiled=True)
    recorder = MemoryLedger()  # the call's record: the evaluation behind the answer
    hook_service = HookService(Evaluator(pack), source_label=source_label, audit=recorder)
    response = hook_service.call(service["id"], body, now=now)
    last = recorder.last
    evaluation = last.evaluation if last else None
    if evaluation is None:  # the service records every answered call with its evaluation
        raise RuntimeError("the service answered without recording its evaluation")
    return Offline(body, response, evaluation)


def hook_request(bundle: dict[str, Any], hook: str, *, prefetch: dict[str, Any] | None = None,
                 templates: dict[str, str] | None = None) -> dict[str, Any]:
    """The full-prefetch request for ``bundle`` (``build_hook_request`` with the record as the fixture holds
    it); ``templates`` default to the packaged rule pack's, ``prefetch`` replaces the answered one."""
    if templates is None:
        templates = _default_templates()
    body = build_hook_request(bundle, hook, {"prefetch": templates}, misfiled=True)
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def prefetch_from_record(record: list[dict], templates: dict[str, str] | None = None) -> dict[str, Any]:
    """Every prefetch key answered from ``record`` (one patient's resources), as ``hook_request`` does."""
    return hook_request(as_bundle(record), "patient-view", templates=templates).get("prefetch") or {}


def _default_templates() -> dict[str, str]:
    from cds.rules.pack import load

    return prefetch_templates(load())


def parse_at(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"--at {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

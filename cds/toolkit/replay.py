"""Replaying fixture bundles against a running service and checking the cards it answers.

A fixture is any ``*.json`` FHIR Bundle with a sidecar ``<name>.expected.json``::

    {"hook": "order-sign", "at": "2026-11-22",
     "cards": [{"rule": "low-estradiol-on-ai", "indicator": "warning", "summary_contains": "Low estradiol"}],
     "not_cards": ["vitamin-d-missing"],
     "status": 200}

Each expected card must be answered (a card whose ``source.topic.code`` is the rule id, with that
indicator and a summary containing that text, when given); no card may come from a rule in
``not_cards``; with ``strict``, no other card may come at all. ``status`` (default 200) is the HTTP status
expected. ``find_fixtures`` and ``compare`` are pure; ``replay`` does the I/O through a ``HookClient``.

A fixture that cannot be checked against a live server is *skipped*, with the reason, and the rest run:

* its record holds data the request builder does not send (a result filed under another patient: no FHIR
  search for this patient returns it, so no EHR sends it; the golden tests send it, offline);
* its sidecar needs a ``site_config`` the server lacks (the server's ``/health`` names the packaged rule
  pack's content hash, that is, no site config at all).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.toolkit.hookclient import HookClient, outcome_line
from cds.toolkit.request import (
    build_hook_request,
    choose_service,
    load_bundle,
    load_sidecar,
    shift_for,
    unsent,
)


@dataclass
class Fixture:
    path: Path
    expected: dict[str, Any]


@dataclass
class Outcome:
    fixture: Path
    verdict: str  # passed | failed | errored | skipped
    latency_ms: float | None = None
    problems: list[str] = field(default_factory=list)  # the diff, one line each
    cards: list[dict[str, Any]] = field(default_factory=list)


def find_fixtures(root: str | Path) -> list[Fixture]:
    """Every fixture with a sidecar under ``root`` (recursively; ``root`` may be one fixture file)."""
    root = Path(root)
    candidates = [root] if root.is_file() else sorted(root.rglob("*.json"))
    found = []
    for path in candidates:
        if path.name.endswith(".expected.json"):
            continue
        expected = load_sidecar(path)
        if expected is not None:
            found.append(Fixture(path, expected))
    return found


def rule_of(card: Mapping[str, Any]) -> str:
    return str(((card.get("source") or {}).get("topic") or {}).get("code") or "(no rule)")


def describe(card: Mapping[str, Any]) -> str:
    return f"{rule_of(card)} [{card.get('indicator')}] {card.get('summary')!r}"


def _expectation(spec: Mapping[str, Any]) -> str:
    parts = [str(spec.get("rule"))]
    if spec.get("indicator"):
        parts.append(f"[{spec['indicator']}]")
    if spec.get("summary_contains"):
        parts.append(f"summary containing {spec['summary_contains']!r}")
    if spec.get("detail_contains"):
        parts.append(f"detail containing {spec['detail_contains']!r}")
    for text in spec.get("detail_lacks") or []:
        parts.append(f"detail without {text!r}")
    return " ".join(parts)


def _fits(spec: Mapping[str, Any], card: Mapping[str, Any]) -> bool:
    """Whether ``card`` answers the sidecar's card entry: indicator, summary and detail texts."""
    detail = str(card.get("detail"))
    return ((not spec.get("indicator") or card.get("indicator") == spec["indicator"])
            and (not spec.get("summary_contains") or spec["summary_contains"] in str(card.get("summary")))
            and (not spec.get("detail_contains") or spec["detail_contains"] in detail)
            and not any(text in detail for text in spec.get("detail_lacks") or []))


def compare(expected: Mapping[str, Any], cards: list[dict[str, Any]], *, strict: bool = False) -> list[str]:
    """The differences between the expectations and the cards answered, as diff lines (empty: a pass)."""
    problems: list[str] = []
    used: set[int] = set()
    for spec in expected.get("cards") or []:
        same_rule = [i for i, c in enumerate(cards) if rule_of(c) == spec.get("rule")]
        fits = [i for i in same_rule if i not in used and _fits(spec, cards[i])]
        if fits:
            used.add(fits[0])
            continue
        problems.append(f"- expected {_expectation(spec)}")
        for i in same_rule:
            problems.append(f"+ answered {describe(cards[i])}")
    unwanted = set(expected.get("not_cards") or [])
    for i, card in enumerate(cards):
        if rule_of(card) in unwanted:
            problems.append(f"+ unexpected {describe(card)} (listed in not_cards)")
        elif (
            strict
            and i not in used
            and not any(rule_of(card) == s.get("rule") for s in expected.get("cards") or [])
        ):
            problems.append(f"+ unexpected {describe(card)} (strict: not in cards)")
    return problems


def replay(
    fixtures: Iterable[Fixture],
    client: HookClient,
    *,
    prefetch: str = "full",
    shift: bool = True,
    server_date: dt.date | None = None,
    strict: bool = False,
    progress: Callable[[int, Outcome], None] | None = None,
) -> list[Outcome]:
    """Send each fixture to the service; return one ``Outcome`` per fixture, in order."""
    fixtures = list(fixtures)
    outcomes: list[Outcome] = []
    found = client.discovery()
    server = _ServerPack(client)
    for index, fixture in enumerate(fixtures):
        if found.error:
            outcome = Outcome(fixture.path, "errored", problems=[f"! discovery failed: {found.error}"])
        elif (reason := _cannot_check(fixture, server)) is not None:
            outcome = Outcome(fixture.path, "skipped", problems=[reason])
        else:
            outcome = _one(
                fixture,
                client,
                found.body,
                prefetch=prefetch,
                shift=shift,
                server_date=server_date,
                strict=strict,
            )
        outcomes.append(outcome)
        if progress is not None:
            progress(index + 1, outcome)
    return outcomes


class _ServerPack:
    """Whether the server runs the packaged rule pack without a site config (asked once, when needed)."""

    def __init__(self, client: HookClient):
        self.client = client
        self._answer: tuple[bool, str] | None = None

    def plain(self) -> tuple[bool, str]:
        """``(True, "rule pack <id> <version>")`` when ``/health`` names the packaged pack's content hash."""
        if self._answer is None:
            from cds.rules.pack import load

            packaged = load()
            found = self.client.health()
            pack = (found.body or {}).get("rulePack") if isinstance(found.body, dict) else None
            pack = pack if isinstance(pack, dict) else {}
            label = f"rule pack {pack.get('id')} {pack.get('version')}"
            self._answer = (found.ok and pack.get("contentHash") == packaged.content_hash, label)
        return self._answer


def _cannot_check(fixture: Fixture, server: _ServerPack) -> str | None:
    """Why ``fixture`` cannot be checked against this server, or None when it can."""
    site = fixture.expected.get("site_config")
    if site:
        plain, label = server.plain()
        if plain:
            thresholds = site.get("thresholds") if isinstance(site, dict) else None
            switches = site.get("units") if isinstance(site, dict) else None
            overrides = ", ".join(
                [f"{name}={value}" for name, value in sorted((thresholds or {}).items())]
                + [f"units.{name}={str(value).lower()}" for name, value in sorted((switches or {}).items())]
            ) if isinstance(thresholds or {}, dict) and isinstance(switches or {}, dict) else ""
            return (f"skipped: needs the site config {overrides or site}, and the server runs the packaged "
                    f"{label} without one")
    try:
        left_out = unsent(load_bundle(fixture.path), str(fixture.expected.get("hook")))
    except Exception:  # noqa: BLE001 - an unreadable fixture is reported when its request is built
        return None
    if left_out:
        return "skipped: the request builder does not send " + "; ".join(left_out)
    return None


def request_for(fixture: Fixture, discovery: Mapping[str, Any], *, prefetch: str = "full", shift: bool = True,
                server_date: dt.date | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(service, body)``: the discovery entry and the hook request ``cds replay`` sends for ``fixture``."""
    expected = fixture.expected
    hook = expected["hook"]
    service = choose_service(discovery, hook, expected.get("service"))
    body = build_hook_request(
        load_bundle(fixture.path),
        hook,
        service,
        prefetch=expected.get("prefetch", prefetch),
        omit=expected.get("omit", ()),
        shift_days=shift_for(expected.get("at"), server_date, shift),
    )
    return service, body


def _one(
    fixture: Fixture,
    client: HookClient,
    discovery: dict[str, Any],
    *,
    prefetch: str,
    shift: bool,
    server_date: dt.date | None,
    strict: bool,
) -> Outcome:
    expected = fixture.expected
    try:
        service, body = request_for(
            fixture, discovery, prefetch=prefetch, shift=shift, server_date=server_date
        )
    except Exception as exc:  # noqa: BLE001 - a broken fixture is reported, and the replay goes on
        message = getattr(exc, "message", None) or str(exc)
        return Outcome(fixture.path, "errored", problems=[f"! cannot build the request: {message}"])
    exchange = client.call(service["id"], body)
    if exchange.status is None:
        return Outcome(fixture.path, "errored", exchange.latency_ms, [f"! {exchange.error}"])
    want_status = int(expected.get("status", 200))
    if exchange.status != want_status:
        verdict = "errored" if exchange.status >= 500 or want_status == 200 else "failed"
        return Outcome(
            fixture.path,
            verdict,
            exchange.latency_ms,
            [
                f"- expected HTTP {want_status}",
                f"+ answered HTTP {exchange.status}: {outcome_line(exchange.body)}",
            ],
        )
    if want_status != 200:
        return Outcome(fixture.path, "passed", exchange.latency_ms)
    cards = exchange.body.get("cards") if isinstance(exchange.body, dict) else None
    if not isinstance(cards, list):
        return Outcome(fixture.path, "errored", exchange.latency_ms, ["! the answer has no 'cards' list"])
    problems = compare(expected, cards, strict=strict)
    return Outcome(fixture.path, "failed" if problems else "passed", exchange.latency_ms, problems, cards)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    verdicts = ("passed", "failed", "errored", "skipped")
    counts = {v: sum(1 for o in outcomes if o.verdict == v) for v in verdicts}
    return {
        "total": len(outcomes),
        **counts,
        "latency_ms": {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)},
    }

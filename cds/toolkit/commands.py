"""``cds request``, ``cds replay`` and ``cds wait``: an integration engineer's view of a running service.

    cds request BUNDLE --hook HOOK --url BASE [--service ID] [--prefetch full|partial|none] [--json]
    cds replay DIR --url BASE [--strict] [--json]
    cds wait --url BASE [--timeout S]            exit 0 once the service answers GET /health

Both sign a client JWT per call (``--key FILE``, ``--iss``; default the development client's key), and
move every date of a fixture by (server date - the fixture's ``at``) first, so that its boundaries hold on
any day (``--no-shift`` sends the dates as written; ``--server-date`` when the server's "now" is not today).
Exit status: 0 success (every fixture passed or was skipped, with the reason), 1 an HTTP error or a
failed/errored fixture, 2 bad usage.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from cds.auth.client_token import DEV_ISS, signer_from
from cds.toolkit.hookclient import HookClient
from cds.toolkit.replay import Outcome, find_fixtures, replay, rule_of, summary
from cds.toolkit.request import (
    HOOKS,
    PREFETCH_MODES,
    build_hook_request,
    choose_service,
    load_bundle,
    load_sidecar,
    parse_date,
    shift_for,
    unsent,
)

# -- output --------------------------------------------------------------------------------------------------


def cards_table(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return "no cards"
    width = max(60, shutil.get_terminal_size((110, 20)).columns - 42)
    rule_w = max(4, *(len(rule_of(c)) for c in cards))
    lines = [f"{'#':>2}  {'indicator':<9}  {'rule':<{rule_w}}  summary", "-" * (rule_w + 26 + min(width, 60))]
    for n, card in enumerate(cards, 1):
        summary_text = str(card.get("summary", ""))
        if len(summary_text) > width:
            summary_text = summary_text[: width - 1] + "…"
        lines.append(f"{n:>2}  {card.get('indicator', ''):<9}  {rule_of(card):<{rule_w}}  {summary_text}")
        for s in card.get("suggestions") or []:
            kinds = ", ".join(str(a.get("type")) for a in s.get("actions") or [])
            lines.append(f"{'':>2}  {'':<9}  {'':<{rule_w}}  -> {s.get('label')} ({kinds})")
    return "\n".join(lines)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def summary_table(stats: dict[str, Any]) -> str:
    lat = stats["latency_ms"]
    rows = [
        ("fixtures", str(stats["total"])),
        ("passed", str(stats["passed"])),
        ("failed", str(stats["failed"])),
        ("errored", str(stats["errored"])),
        ("skipped", str(stats["skipped"])),
        ("latency p50", _fmt_ms(lat["p50"])),
        ("latency p95", _fmt_ms(lat["p95"])),
        ("latency p99", _fmt_ms(lat["p99"])),
    ]
    return "\n".join(f"  {name:<12} {value:>9}" for name, value in rows)


class ProgressBar:
    """A one-line bar on stderr: ``[#####.....] 12/40 failed 1 errored 0``."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30):
        self.total, self.stream, self.width = total, stream or sys.stderr, width
        self.failed = self.errored = 0

    def __call__(self, done: int, outcome: Outcome) -> None:
        self.failed += outcome.verdict == "failed"
        self.errored += outcome.verdict == "errored"
        filled = self.width * done // max(1, self.total)
        end = "\n" if done >= self.total else ""
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
            f"failed {self.failed} errored {self.errored}{end}"
        )
        self.stream.flush()


# -- commands ------------------------------------------------------------------------------------------------


def _client(o: dict[str, Any]) -> HookClient:
    signer = signer_from(o["key"], iss=o["iss"])
    if signer is None:
        click.echo("cds: note: no signing key (--key, or the development client's key); calls carry no JWT",
                   err=True)
    return HookClient(o["url"], signer=signer, timeout=(o["connect_timeout"], o["timeout"]))


def _server_date(o: dict[str, Any]) -> Any:
    return parse_date(o["server_date"], "--server-date") if o["server_date"] else None


def common_options(func: Any) -> Any:
    options = [
        click.option("--url", required=True, help="the service's base URL (the one /cds-services hangs off)"),
        click.option("--prefetch", type=click.Choice(PREFETCH_MODES), default="full", show_default=True,
                     help="answer every prefetch key (full), some (partial), or send none"),
        click.option("--key", type=click.Path(dir_okay=False),
                     help="private JWK or JWK Set file to sign with (default: the dev client's key)"),
        click.option("--iss", default=DEV_ISS, show_default=True, help="the client's issuer"),
        click.option("--no-shift", is_flag=True, help="send the fixture's dates as written"),
        click.option("--server-date", metavar="DATE",
                     help="the date the server evaluates at (default: today, UTC)"),
        click.option("--timeout", type=float, default=30.0, show_default=True,
                     help="read timeout per call, seconds"),
        click.option("--connect-timeout", type=float, default=5.0, show_default=True,
                     help="connect timeout, seconds"),
        click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("request")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--hook", type=click.Choice(HOOKS), help="the hook (default: the bundle's sidecar)")
@click.option("--service", help="service id (default: the discovery's service for the hook)")
@click.option("--omit", multiple=True, metavar="KEY",
              help="with --prefetch partial: a prefetch key to leave out (repeatable)")
@click.option("--at", metavar="DATE",
              help="the date the bundle was written for (default: the sidecar's 'at'; none: no shift)")
@common_options
def request_cmd(bundle: str, hook: str | None, service: str | None, omit: tuple[str, ...], at: str | None,
                **o: Any) -> int:
    """Send one fixture BUNDLE to a running service as a signed hook call, and print the cards."""
    record = load_bundle(bundle)
    sidecar = load_sidecar(bundle) or {}
    hook = hook or sidecar.get("hook")
    if hook not in HOOKS:
        raise ValueError(f"--hook is required (one of {', '.join(HOOKS)}) when the bundle has no sidecar")
    days = shift_for(at or sidecar.get("at"), _server_date(o), not o["no_shift"])
    client = _client(o)
    found = client.discovery()
    if found.error:
        click.echo(f"cds: error: {found.error}", err=True)
        return 1
    entry = choose_service(found.body, hook, service)
    body = build_hook_request(record, hook, entry, prefetch=o["prefetch"], omit=omit, shift_days=days)
    for line in unsent(record, hook):
        click.echo(f"cds: note: not sent: {line}", err=True)
    exchange = client.call(entry["id"], body)
    if exchange.error:
        click.echo(f"cds: error: {exchange.error}", err=True)
        return 1
    cards = exchange.body.get("cards") or []
    if o["as_json"]:
        click.echo(json.dumps(exchange.body, indent=2))
        return 0
    shifted = f", dates moved {days:+d} days" if days else ""
    click.echo(
        f"{entry['id']} answered {len(cards)} card(s) in {exchange.latency_ms:.0f} ms "
        f"(prefetch {o['prefetch']}{shifted})"
    )
    click.echo(cards_table(cards))
    return 0


@click.command("replay")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True))
@click.option("--strict", is_flag=True, help="also fail on cards the sidecar does not list")
@click.option("--progress/--no-progress", default=None,
              help="progress bar on stderr (default: when stderr is a terminal)")
@common_options
def replay_cmd(folder: str, strict: bool, progress: bool | None, **o: Any) -> int:
    """Send every fixture under DIR (those with a sidecar <name>.expected.json) and check the cards.

    A fixture that cannot be checked against a live server (it needs a site config the server lacks, or
    holds data the request builder does not send) is skipped, with the reason.
    """
    fixtures = find_fixtures(folder)
    if not fixtures:
        raise ValueError(f"no fixtures with a sidecar <name>.expected.json under {folder}")
    client = _client(o)
    show_bar = sys.stderr.isatty() if progress is None else progress
    outcomes = replay(
        fixtures,
        client,
        prefetch=o["prefetch"],
        shift=not o["no_shift"],
        server_date=_server_date(o),
        strict=strict,
        progress=ProgressBar(len(fixtures)) if show_bar else None,
    )
    stats = summary(outcomes)
    root = Path(folder)
    if o["as_json"]:
        report = {
            "summary": stats,
            "fixtures": [
                {"fixture": str(x.fixture), "verdict": x.verdict, "latency_ms": x.latency_ms,
                 "problems": x.problems}
                for x in outcomes
            ],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for outcome in outcomes:
            if outcome.verdict != "passed":
                name = outcome.fixture.relative_to(root) if root.is_dir() else outcome.fixture
                click.echo(f"{outcome.verdict.upper()}: {name}")
                for line in outcome.problems:
                    click.echo(f"    {line}")
        click.echo(f"replay of {root} against {o['url']}:")
        click.echo(summary_table(stats))
    return 0 if stats["failed"] == stats["errored"] == 0 else 1


@click.command("wait")
@click.option("--url", required=True, help="the service's base URL (its GET /health is asked)")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="seconds to wait before giving up (exit 1)")
def wait_cmd(url: str, timeout: float) -> int:
    """Wait until the service at URL answers GET /health with 200 (retrying any error), then exit 0."""
    found = wait_for_health(url, timeout)
    if found is not None:
        click.echo(f"cds: error: {url} did not answer GET /health within {timeout:g} s ({found})", err=True)
        return 1
    return 0


def wait_for_health(url: str, timeout: float, interval: float = 0.25) -> str | None:
    """None once ``url``/health answers 200 within ``timeout`` seconds; else the last problem seen."""
    import time

    deadline = time.monotonic() + timeout
    client = HookClient(url, timeout=(min(5.0, max(timeout, 0.1)), min(10.0, max(timeout, 0.1))))
    while True:
        found = client.health()
        if found.status == 200:
            return None
        problem = found.error or f"HTTP {found.status}"
        if time.monotonic() >= deadline:
            return problem
        time.sleep(interval)


@click.command("collection")
@click.argument("folders", metavar="[DIR]...", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="write to FILE (default: standard output)")
def collection_cmd(folders: tuple[str, ...], out: str | None) -> int:
    """Write a request collection (Postman v2.1: Postman, Bruno, Insomnia) of the fixtures with a sidecar
    under each DIR (default: fixtures/scenarios), built as `cds request` builds its calls."""
    from cds import settings
    from cds.rules import pack as rulepack
    from cds.toolkit.collection import collection_text

    values = settings.load()
    pack = rulepack.load(values["RULES_DIR"] or None, values["SITE_CONFIG"] or None)
    text = collection_text(pack, [Path(f) for f in folders or ("fixtures/scenarios",)], root=Path.cwd())
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    return 0


COMMANDS = (request_cmd, replay_cmd, wait_cmd, collection_cmd)

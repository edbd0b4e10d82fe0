"""``cds request`` and ``cds replay``: an integration engineer's view of a running service.

    cds request BUNDLE --hook HOOK --url BASE [--service ID] [--prefetch full|partial|none] [--json]
    cds replay DIR --url BASE [--strict] [--json]

Both sign a client JWT per call (``--key FILE``, ``--iss``; default the development client's key), and
move every date of a fixture by (server date - the fixture's ``at``) first, so that its boundaries hold on
any day (``--no-shift`` sends the dates as written; ``--server-date`` when the server's "now" is not today).
Exit status: 0 success (every fixture passed), 1 an HTTP error or a failed/errored fixture, 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

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


def _client(args: argparse.Namespace) -> HookClient:
    signer = signer_from(args.key, iss=args.iss)
    if signer is None:
        print(
            "cds: note: no signing key (--key, or the development client's key); calls carry no JWT",
            file=sys.stderr,
        )
    return HookClient(args.url, signer=signer, timeout=(args.connect_timeout, args.timeout))


def _request(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    sidecar = load_sidecar(args.bundle) or {}
    hook = args.hook or sidecar.get("hook")
    if hook not in HOOKS:
        raise ValueError(f"--hook is required (one of {', '.join(HOOKS)}) when the bundle has no sidecar")
    server_date = parse_date(args.server_date, "--server-date") if args.server_date else None
    days = shift_for(args.at or sidecar.get("at"), server_date, not args.no_shift)
    client = _client(args)
    found = client.discovery()
    if found.error:
        print(f"cds: error: {found.error}", file=sys.stderr)
        return 1
    service = choose_service(found.body, hook, args.service)
    body = build_hook_request(bundle, hook, service, prefetch=args.prefetch, omit=args.omit, shift_days=days)
    exchange = client.call(service["id"], body)
    if exchange.error:
        print(f"cds: error: {exchange.error}", file=sys.stderr)
        return 1
    cards = exchange.body.get("cards") or []
    if args.json:
        print(json.dumps(exchange.body, indent=2))
        return 0
    shifted = f", dates moved {days:+d} days" if days else ""
    print(
        f"{service['id']} answered {len(cards)} card(s) in {exchange.latency_ms:.0f} ms "
        f"(prefetch {args.prefetch}{shifted})"
    )
    print(cards_table(cards))
    return 0


def _replay(args: argparse.Namespace) -> int:
    fixtures = find_fixtures(args.dir)
    if not fixtures:
        raise ValueError(f"no fixtures with a sidecar <name>.expected.json under {args.dir}")
    server_date = parse_date(args.server_date, "--server-date") if args.server_date else None
    client = _client(args)
    show_bar = sys.stderr.isatty() if args.progress is None else args.progress
    outcomes = replay(
        fixtures,
        client,
        prefetch=args.prefetch,
        shift=not args.no_shift,
        server_date=server_date,
        strict=args.strict,
        progress=ProgressBar(len(fixtures)) if show_bar else None,
    )
    stats = summary(outcomes)
    root = Path(args.dir)
    if args.json:
        print(
            json.dumps(
                {
                    "summary": stats,
                    "fixtures": [
                        {
                            "fixture": str(o.fixture),
                            "verdict": o.verdict,
                            "latency_ms": o.latency_ms,
                            "problems": o.problems,
                        }
                        for o in outcomes
                    ],
                },
                indent=2,
            )
        )
    else:
        for outcome in outcomes:
            if outcome.verdict != "passed":
                name = outcome.fixture.relative_to(root) if root.is_dir() else outcome.fixture
                print(f"{outcome.verdict.upper()}: {name}")
                for line in outcome.problems:
                    print(f"    {line}")
        print(f"replay of {root} against {args.url}:")
        print(summary_table(stats))
    return 0 if stats["passed"] == stats["total"] else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the service's base URL (the one /cds-services hangs off)")
    p.add_argument(
        "--prefetch",
        choices=PREFETCH_MODES,
        default="full",
        help="answer every prefetch key (full), some (partial), or send none",
    )
    p.add_argument("--key", help="private JWK or JWK Set file to sign with (default: the dev client's key)")
    p.add_argument("--iss", default=DEV_ISS, help=f"the client's issuer (default {DEV_ISS})")
    p.add_argument("--no-shift", action="store_true", help="send the fixture's dates as written")
    p.add_argument("--server-date", help="the date the server evaluates at (default: today, UTC)")
    p.add_argument("--timeout", type=float, default=30.0, help="read timeout per call, seconds (default 30)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="connect timeout, seconds (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def add_parsers(sub: Any) -> None:
    req = sub.add_parser("request", help="send one fixture bundle to a running service as a signed hook call")
    req.add_argument("bundle")
    req.add_argument("--hook", choices=HOOKS, help="the hook (default: the bundle's sidecar)")
    req.add_argument("--service", help="service id (default: the discovery's service for the hook)")
    req.add_argument(
        "--omit",
        action="append",
        default=[],
        metavar="KEY",
        help="with --prefetch partial: a prefetch key to leave out (repeatable)",
    )
    req.add_argument(
        "--at", help="the date the bundle was written for (default: the sidecar's 'at'; none: no shift)"
    )
    _common(req)
    req.set_defaults(func=_request)

    rep = sub.add_parser(
        "replay", help="send every fixture under a folder and check the cards against its sidecar"
    )
    rep.add_argument("dir")
    rep.add_argument("--strict", action="store_true", help="also fail on cards the sidecar does not list")
    rep.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    _common(rep)
    rep.set_defaults(func=_replay, omit=[])


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()

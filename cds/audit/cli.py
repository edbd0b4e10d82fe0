"""``cds audit ...``: the audit trail from the command line (same store and queries as the web pages).

cds audit migrate                          bring the database schema up to date
cds audit list [filters] [--json]          newest first
cds audit show ID [--json]                 one record (seq, record id or card uuid)
cds audit verify                           check the hash chain; exit 1 at the first broken link
cds audit export --format ndjson|csv       every record, oldest first, to stdout (or --output)
cds audit replay --rules DIR [--since D]   which cards would appear, disappear or change
cds audit drain                            move spooled records into the database now
cds audit token NAME                       make an auditor token and its AUDITOR_TOKENS entry
cds audit patient-key < ID                 the patient key of a patient id read from stdin
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from cds.audit import queries


def _values() -> dict[str, Any]:
    from cds import settings

    return settings.load()


def _engine(values: dict[str, Any]):
    """The audit database, migrated to the current schema (as the service does at start-up), so that a
    database no call has reached yet reads as an empty trail rather than an error."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds.audit import database_url
    from cds.db import engine_for, ensure_schema
    from cds.errors import AuditUnavailable

    engine = engine_for(database_url(values))
    try:
        ensure_schema(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise AuditUnavailable(f"cannot open the audit database: {reason}") from exc
    return engine


def _filters(args: argparse.Namespace) -> queries.Filters:
    return queries.Filters(
        since=queries.parse_time(args.since),
        until=queries.parse_time(args.until),
        service=args.service,
        rule=args.rule,
        indicator=args.indicator,
        outcome=args.outcome,
        patient_key=args.patient_key,
    )


def _migrate(args: argparse.Namespace) -> int:
    from cds.db import ensure_schema

    revision = ensure_schema(_engine(_values()))  # already migrated by _engine; reports the revision
    print(f"database at revision {revision}")
    return 0


def _list(args: argparse.Namespace) -> int:
    page = queries.list_records(_engine(_values()), _filters(args), limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(f"{page['total']} record(s)")
    for rec in page["records"]:
        cards = "; ".join(f"[{c['indicator']}] {c['summary']}" for c in rec["cards"]) or "no card"
        print(f"{rec['seq']:>6}  {rec['time'][:19]}  {rec['service']:<26} {rec['outcome']:<4} {cards}")
    return 0


def _show(args: argparse.Namespace) -> int:
    found = queries.get_record(_engine(_values()), args.id)
    if found is None:
        print(f"cds: error: no audit record {args.id!r}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    r = found["record"]
    print(f"record #{found['seq']} {r['id']}  {r['time']}  {r['service']}  outcome {r['outcome']}")
    print(
        f"rule pack {r['rulePack']['id']} {r['rulePack']['version']} ({r['rulePack']['contentHash'][:12]})"
        f"  patient key {(r['patientKey'] or '-')[:16]}  latency {r['latencyMs']} ms"
    )
    for card in r["cards"]:
        print(
            f"  card [{card['indicator']}] {card['summary']}"
            f"  ({r['cardRules'].get(card['uuid'])}, {card['uuid']})"
        )
    for fired in r["fired"]:
        print(f"  fired {fired['rule']} v{fired['version']} on {', '.join(fired['facts'])}")
    for gap in r["notEvaluated"]:
        print(f"  could not evaluate {gap['rule']}: {gap['reason']}")
    if r.get("outOfScope"):
        print(f"  out of scope ({r['outOfScope']['code']}): {r['outOfScope']['reason']}")
    for f in found["feedback"]:
        print(
            f"  feedback {f['outcome']} on {f['card']} at {f['received'][:19]}"
            + (f" ({f['overrideReason']['code']})" if f["overrideReason"] else "")
        )
    print(f"  hash {found['hash']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    checked, broken = queries.verify_chain(_engine(_values()))
    if broken is None:
        print(f"audit chain OK: {checked} record(s) verified")
        return 0
    print(f"audit chain BROKEN at record #{broken.seq} ({broken.id}): {broken.reason}")
    return 1


CSV_COLUMNS = (
    "seq",
    "id",
    "time",
    "service",
    "hook",
    "outcome",
    "patient_key",
    "pack_version",
    "latency_ms",
    "rules",
    "prev_hash",
    "hash",
)


def _export(args: argparse.Namespace) -> int:
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        rows = queries.iter_records(_engine(_values()), _filters(args))
        if args.format == "ndjson":
            for row in rows:
                out.write(
                    json.dumps(
                        {
                            "seq": row.seq,
                            "prevHash": row.prev_hash,
                            "hash": row.hash,
                            "record": json.loads(row.content),
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                )
        else:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow(
                    [
                        queries._utc(row.time).isoformat()
                        if c == "time"
                        else " ".join(row.rules.split())
                        if c == "rules"
                        else getattr(row, c)
                        for c in CSV_COLUMNS
                    ]
                )
    finally:
        if args.output:
            out.close()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from cds.audit.rerun import replay
    from cds.rules import pack as rulepack

    values = _values()
    pack = rulepack.load(args.rules, values["SITE_CONFIG"] or None)
    filters = queries.Filters(since=queries.parse_time(args.since), until=queries.parse_time(args.until))
    report = replay(queries.iter_records(_engine(values), filters), pack)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    t = report["totals"]
    print(
        f"replayed {t['replayed']} call(s) under rule pack {pack.id} {pack.version}: "
        f"{t['callsChanged']} would "
        f"differ ({t['appeared']} card(s) appear, {t['disappeared']} disappear, {t['changed']} change)"
    )
    for call in report["calls"]:
        print(f"#{call['seq']} {call['time'][:19]} {call['service']}")
        for c in call["appeared"]:
            print(f"  + [{c['indicator']}] {c['rule']}: {c['summary']}")
        for c in call["disappeared"]:
            print(f"  - [{c['indicator']}] {c['rule']}: {c['summary']}")
        for c in call["changed"]:
            print(
                f"  ~ {c['rule']}: [{c['before']['indicator']}] {c['before']['summary']}"
                f"  ->  [{c['after']['indicator']}] {c['after']['summary']}"
            )
    return 0


def _drain(args: argparse.Namespace) -> int:
    from cds.audit import open_store
    from cds.rules import pack as rulepack

    values = _values()
    store = open_store(values, rulepack.load(values["RULES_DIR"] or None, values["SITE_CONFIG"] or None))
    moved = store.drain(wait=True)
    print(
        f"moved {moved} spooled entr{'y' if moved == 1 else 'ies'} to the database; "
        f"{store.spool.count()} left"
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from cds.audit.auth import new_token

    token, entry = new_token(args.name)
    print(f"token (give it to {args.name}; it is not stored): {token}")
    print(f"add to CDS_AUDITOR_TOKENS: {entry}")
    return 0


def _patient_key(args: argparse.Namespace) -> int:
    from cds.audit import patient_secret
    from cds.audit.record import patient_key

    patient_id = sys.stdin.readline().strip()  # not an argument: kept out of shell history and ps
    if patient_id.startswith("Patient/"):
        patient_id = patient_id[len("Patient/") :]
    if not patient_id:
        print("cds: error: give the patient id on standard input", file=sys.stderr)
        return 2
    print(patient_key(patient_secret(_values()), patient_id))
    return 0


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="from this date or date-time (UTC)")
    p.add_argument("--until", help="before this date or date-time (UTC)")
    p.add_argument("--service")
    p.add_argument("--rule", help="records where this rule fired")
    p.add_argument("--indicator", choices=("info", "warning", "critical"))
    p.add_argument("--outcome", help="ok, 400, 412, ...")
    p.add_argument("--patient-key")


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trail: list, show, verify, export, replay")
    cmds = audit.add_subparsers(dest="audit_command", required=True)
    cmds.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=_migrate)
    p = cmds.add_parser("list", help="list records, newest first")
    _add_filters(p)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    p = cmds.add_parser("show", help="one record in full")
    p.add_argument("id", help="record seq, record id or card uuid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)
    cmds.add_parser("verify", help="verify the hash chain").set_defaults(func=_verify)
    p = cmds.add_parser("export", help="export records, oldest first")
    p.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    p.add_argument("--output", "-o", help="file to write (default stdout)")
    _add_filters(p)
    p.set_defaults(func=_export)
    p = cmds.add_parser("replay", help="re-run stored facts under another rule pack")
    p.add_argument("--rules", required=True, help="rule pack folder to compare against")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_replay)
    cmds.add_parser("drain", help="move spooled records into the database now").set_defaults(func=_drain)
    cmds.add_parser("patient-key", help="the patient key of a patient id (read from stdin)").set_defaults(
        func=_patient_key
    )
    p = cmds.add_parser("token", help="make an auditor token")
    p.add_argument("name")
    p.set_defaults(func=_token)

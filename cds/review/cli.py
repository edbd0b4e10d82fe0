"""``cds audit ...``: the audit trail from the command line (same store and queries as the web pages).

cds audit migrate                          bring the database schema up to date
cds audit list [filters] [--json]          newest first, one page (--limit, --offset)
cds audit show ID [--json]                 one record (seq, record id, card uuid or hookInstance)
cds audit verify [--expect-head HEAD]      check every audit table against the chains; print the head
cds audit export --format ndjson|csv       every record, oldest first, to stdout (or --output)
cds audit rerun --rules DIR [--since D]    which cards would appear, disappear or change (the past calls
                                           run again under another pack; ``replay``: its former name)
cds audit drain                            move spooled records into the database now
cds audit token NAME                       make an auditor token and its AUDITOR_TOKENS entry
cds audit patient-key < ID                 the patient key of a patient id read from stdin

The same group is on the Flask command line: ``flask --app cds.web.app audit list``. ``Commands`` is the
click group class of the whole ``cds`` command line: a failing command says why in one line on stderr
(``cds: error: ...``) and exits non-zero, never with a traceback.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from cds.errors import CdsError
from cds.review import queries
from cds.review.quiet import pending_orders_state, quiet_cards

ORDER_TYPES = ("MedicationRequest", "ServiceRequest")


class Failed(click.ClickException):
    """A command's failure, shown as ``cds: error: <message>`` (and one ``  - detail`` line per detail)."""

    def __init__(self, message: str, details: list[str] | None = None, *, code: int = 2,
                 kind: str = "error"):
        super().__init__(message)
        self.details, self.kind = details or [], kind
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: Any = None) -> None:
        click.echo(f"cds: {self.kind}: {self.message}", err=True)
        for detail in self.details:
            click.echo(f"  - {detail}", err=True)


def fail(message: str, code: int = 2) -> NoReturn:
    raise Failed(message, code=code)


class Commands(click.Group):
    """A group whose commands return their exit status and fail in one line (``Failed``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except CdsError as exc:
            raise Failed(exc.message, list(exc.details)) from None
        except ValueError as exc:
            raise Failed(str(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the command line answers in one line, never a traceback
            first_line = (str(exc).splitlines() or [""])[0]
            raise Failed(f"{type(exc).__name__}: {first_line}", code=1, kind="internal error") from None
        if isinstance(result, int) and result:
            raise click.exceptions.Exit(result)
        return result


def order_of(fired: dict[str, Any]) -> str | None:
    """The order a fired rule refers to (``MedicationRequest/mr-1 (draft order)``), when one of its facts
    comes from a MedicationRequest or ServiceRequest; None otherwise."""
    for fact in (fired.get("facts") or {}).values():
        ref = fact.get("ref") if isinstance(fact, dict) else None
        if isinstance(ref, str) and ref.partition("/")[0] in ORDER_TYPES:
            return f"{ref} (draft order)" if fact.get("draft") else ref
    return None


def _values() -> dict[str, Any]:
    from cds import settings

    return settings.load()


def _engine(values: dict[str, Any]):
    """The audit database, migrated to the current schema (as the service does at start-up), so that a
    database no call has reached yet reads as an empty trail rather than an error."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds.db import engine_for, ensure_schema
    from cds.errors import AuditUnavailable
    from cds.ledger import database_url

    engine = engine_for(database_url(values))
    try:
        ensure_schema(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise AuditUnavailable(f"cannot open the audit database: {reason}") from exc
    return engine


def _time(raw: str | None, option: str):
    """``--since`` or ``--until`` read as the API reads them: an ``--until`` date includes that day."""
    parse = queries.parse_until if option == "--until" else queries.parse_time
    try:
        return parse(raw)
    except ValueError as exc:
        if "outside the years" in str(exc):
            fail(f"{option} {exc}")
        fail(f"{option} {raw!r} is not an ISO date or date-time (YYYY-MM-DD[THH:MM[:SS]])")


def _filters(o: dict[str, Any]) -> queries.Filters:
    return queries.Filters(
        since=_time(o.get("since"), "--since"),
        until=_time(o.get("until"), "--until"),
        service=o.get("service"),
        rule=o.get("rule"),
        indicator=o.get("indicator"),
        outcome=o.get("outcome"),
        patient_key=o.get("patient_key"),
    )


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--since", metavar="DATE", help="from this date or date-time (UTC)"),
        click.option("--until", metavar="DATE",
                     help="up to and including this date, or before this date-time (UTC)"),
        click.option("--service", help="only calls to this service id"),
        click.option("--rule", help="records where this rule fired"),
        click.option("--indicator", type=click.Choice(["info", "warning", "critical"]),
                     help="records with a card of this indicator"),
        click.option("--outcome", help="ok, 400, 412, ... (the call's outcome)"),
        click.option("--patient-key", help="the 64-hex patient key (see: cds audit patient-key)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


@click.group("audit", cls=Commands)
def audit() -> None:
    """The audit trail: list, show, verify, export, rerun under another rule pack."""


@audit.command("migrate")
def migrate_cmd() -> int:
    """Bring the database schema up to date."""
    from cds.db import ensure_schema

    revision = ensure_schema(_engine(_values()))  # already migrated by _engine; reports the revision
    click.echo(f"database at revision {revision}")
    return 0


@audit.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1, queries.MAX_PAGE), default=50, show_default=True,
              help="records per page")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True,
              help="records to skip (newest first): the page start")
@JSON
def list_cmd(limit: int, offset: int, as_json: bool, **filters: Any) -> int:
    """List records, newest first, one page at a time."""
    page = queries.list_records(_engine(_values()), _filters(filters), limit=limit, offset=offset)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return 0
    click.echo(f"{page['total']} record(s)")
    for rec in page["records"]:
        cards = "; ".join(f"[{c['indicator']}] {c['summary']}" for c in rec["cards"]) or "no card"
        click.echo(f"{rec['seq']:>6}  {rec['time'][:19]}  {rec['service']:<26} {rec['outcome']:<4} {cards}")
    shown = len(page["records"])
    if offset + shown < page["total"]:
        click.echo(f"showing {offset + 1}-{offset + shown} of {page['total']}; next page: add "
                   f"--offset {offset + shown} (or --limit up to {queries.MAX_PAGE})")
    return 0


def _find(engine: Any, key: str) -> tuple[dict[str, Any] | None, list[int]]:
    """The record for ``key`` (seq, record id, card uuid or hookInstance) and, for a hookInstance, the seq of
    every record of that call."""
    found = queries.get_record(engine, key)
    if found is not None:
        return found, []
    seqs = queries.seqs_for_hook_instance(engine, key)
    return (queries.get_record(engine, str(seqs[-1])), seqs) if seqs else (None, [])


@audit.command("show")
@click.argument("key", metavar="ID")
@JSON
def show_cmd(key: str, as_json: bool) -> int:
    """One record in full: ID is its seq, record id, a card uuid or the call's hookInstance."""
    found, seqs = _find(_engine(_values()), key)
    if found is None:
        fail(f"no audit record {key!r} (give a seq, record id, card uuid or hookInstance)")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return 0
    r = found["record"]
    if len(seqs) > 1:
        click.echo(f"hookInstance {key} was recorded {len(seqs)} times "
                   f"(#{', #'.join(map(str, seqs))}); the newest:")
    click.echo(f"record #{found['seq']} {r['id']}  {r['time']}  {r['service']}  outcome {r['outcome']}")
    click.echo(
        f"rule pack {r['rulePack']['id']} {r['rulePack']['version']} ({r['rulePack']['contentHash'][:12]})"
        f"  patient key {(r['patientKey'] or '-')[:16]}  latency {r['latencyMs']} ms"
    )
    if r.get("hookInstance"):
        click.echo(f"hookInstance {r['hookInstance']}")
    for card in r["cards"]:
        click.echo(
            f"  card [{card['indicator']}] {card['summary']}"
            f"  ({r['cardRules'].get(card['uuid'])}, {card['uuid']})"
        )
    for quiet in quiet_cards(r):
        click.echo(f"  quiet [{quiet['card'].get('indicator')}] {quiet['card'].get('summary')}"
                   f"  ({quiet['rule']}): {quiet['why']}")
    if pending_orders_state(r):
        click.echo(f"  pending orders: {pending_orders_state(r)}")
    for fired in r["fired"]:
        order = order_of(fired)
        click.echo(f"  fired {fired['rule']} v{fired['version']}" + (f" for {order}" if order else "")
                   + f" on {', '.join(fired['facts'])}")
    for gap in r["notEvaluated"]:
        click.echo(f"  could not evaluate {gap['rule']}: {gap['reason']}")
    if r.get("outOfScope"):
        click.echo(f"  out of scope ({r['outOfScope']['code']}): {r['outOfScope']['reason']}")
    run = r.get("run")
    if isinstance(run, dict):  # a population run (cds gaps): who ran it, what it read and wrote, the counts
        counts = run.get("counts") or {}
        click.echo(f"  run by {run.get('user')} on {run.get('host')} for {run.get('at')} "
                   f"({run.get('engine')}, {run.get('workers')} worker(s)): "
                   f"{counts.get('read')} patient(s) read, {counts.get('withGaps')} with gaps, "
                   f"{counts.get('gaps')} gap(s), {counts.get('setAside')} line(s) set aside")
        for item in run.get("inputs") or []:
            click.echo(f"  input  {item['file']}  sha256 {item['sha256']}  {item['lines']} line(s)")
        for item in run.get("outputs") or []:
            click.echo(f"  output {item['file']}  sha256 {item['sha256']}")
    for f in found["feedback"]:
        click.echo(
            f"  feedback {f['outcome']} on {f['card']} at {f['received'][:19]}"
            + (f" ({f['overrideReason']['code']})" if f["overrideReason"] else "")
        )
    click.echo(f"  hash {found['hash']}")
    return 0


@audit.command("verify")
@click.option("--expect-head", metavar="HEAD", help="A head printed by an earlier verify and kept elsewhere: "
              "fail unless the trail still holds it (a cut tail or a rewrite).")
def verify_cmd(expect_head: str | None) -> int:
    """Check every audit table against the hash chains and print the head; exit 1 when broken."""
    from cds.review.verify import verify_lines

    code, lines = verify_lines(_engine(_values()), expect_head)
    click.echo("\n".join(lines))
    return code


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


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True,
              help="ndjson: the full records with their chain hashes; csv: one summary row per record")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="file to write (default: standard output)")
@filter_options
def export_cmd(fmt: str, output: str | None, **filters: Any) -> int:
    """Export records, oldest first."""
    rows = queries.iter_records(_engine(_values()), _filters(filters))
    out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "ndjson":
            for row in rows:
                record = {"seq": row.seq, "prevHash": row.prev_hash, "hash": row.hash,
                          "record": json.loads(row.content)}
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow([_csv_cell(row, c) for c in CSV_COLUMNS])
    finally:
        if output:
            out.close()
    return 0


def _csv_cell(row: Any, column: str) -> Any:
    if column == "time":
        return queries._utc(row.time).isoformat()
    if column == "rules":
        return " ".join(row.rules.split())
    return getattr(row, column)


@audit.command("rerun")
@click.option("--rules", "rules_dir", required=True, type=click.Path(file_okay=False),
              help="rule pack folder to compare against")
@click.option("--since", metavar="DATE", help="calls from this date or date-time (UTC)")
@click.option("--until", metavar="DATE",
              help="calls up to and including this date, or before this date-time (UTC)")
@JSON
def rerun_cmd(rules_dir: str, since: str | None, until: str | None, as_json: bool) -> int:
    """Re-run the stored facts of past calls under another rule pack: which cards would change."""
    from cds.review.rerun import rerun
    from cds.rules import pack as rulepack

    values = _values()
    pack = rulepack.load(rules_dir, values["SITE_CONFIG"] or None)
    filters = queries.Filters(since=_time(since, "--since"), until=_time(until, "--until"))
    report = rerun(queries.iter_records(_engine(values), filters), pack)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    t = report["totals"]
    click.echo(
        f"re-ran {t['rerun']} call(s) under rule pack {pack.id} {pack.version}: "
        f"{t['callsChanged']} would "
        f"differ ({t['appeared']} card(s) appear, {t['disappeared']} disappear, {t['changed']} change)"
    )
    for call in report["calls"]:
        click.echo(f"#{call['seq']} {call['time'][:19]} {call['service']}")
        for c in call["appeared"]:
            click.echo(f"  + [{c['indicator']}] {c['rule']}: {c['summary']}")
        for c in call["disappeared"]:
            click.echo(f"  - [{c['indicator']}] {c['rule']}: {c['summary']}")
        for c in call["changed"]:
            click.echo(
                f"  ~ {c['rule']}: [{c['before']['indicator']}] {c['before']['summary']}"
                f"  ->  [{c['after']['indicator']}] {c['after']['summary']}"
            )
    return 0


# ``cds audit replay``: the command's former name, kept working for scripts; hidden from the help
audit.add_command(click.Command("replay", callback=rerun_cmd.callback, params=rerun_cmd.params,
                                help=rerun_cmd.help, hidden=True))


@audit.command("drain")
def drain_cmd() -> int:
    """Move spooled records into the database now."""
    from cds.ledger import open_store
    from cds.rules import pack as rulepack

    values = _values()
    store = open_store(values, rulepack.load(values["RULES_DIR"] or None, values["SITE_CONFIG"] or None))
    moved = store.drain(wait=True)
    quarantined = store.health()["quarantined"]
    click.echo(
        f"moved {moved} spooled entr{'y' if moved == 1 else 'ies'} to the database; "
        f"{store.spool.count()} left; {quarantined} quarantined in all"
    )
    return 0


@audit.command("token")
@click.argument("name")
def token_cmd(name: str) -> int:
    """Make an auditor token for NAME and its CDS_AUDITOR_TOKENS entry."""
    from cds.review.auth import new_token

    if not name or ":" in name or "," in name or name != name.strip():
        fail(f"auditor name {name!r}: use a name without ':', ',' or surrounding spaces")
    token, entry = new_token(name)
    click.echo(f"token (give it to {name}; it is not stored): {token}")
    click.echo(f"add to CDS_AUDITOR_TOKENS: {entry}")
    click.echo(
        "then restart the service with the new CDS_AUDITOR_TOKENS value (entries are comma-separated): "
        "it reads the auditors at start-up, so the token works only after the restart"
    )
    return 0


@audit.command("patient-key")
def patient_key_cmd() -> int:
    """Print the patient key of a patient id read from standard input (kept out of shell history)."""
    from cds.ledger.keys import patient_secret
    from cds.ledger.record import patient_key

    patient_id = sys.stdin.readline().strip()  # not an argument: kept out of shell history and ps
    if patient_id.startswith("Patient/"):
        patient_id = patient_id[len("Patient/") :]
    if not patient_id:
        fail("give the patient id on standard input")
    click.echo(patient_key(patient_secret(_values()), patient_id))
    return 0

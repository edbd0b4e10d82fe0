"""``cds gaps EXPORT --out DIR``: the care gaps of a whole population from a FHIR Bulk Data export.

    cds gaps EXPORT --out DIR [--at DATE] [--workers N] [--scheduler ADDRESS] [--scratch DIR] [--strict]
    cds gaps --fhir-server URL [--group ID] [--token-file FILE] --out DIR [...]   (cds/population/bulk.py:
        a Bulk Data export fetched into DIR/export first, then the same run over it)

Prints one line on completion (patients read, in scope, out of scope, with gaps; gaps; lines set aside;
the audit record). Exit status: 0 completed, 1 completed with lines set aside under ``--strict``, 2 the
run stopped (a file that cannot be read, a worker with another rule pack, bad usage), one line naming why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def summary_line(summary: dict[str, Any], out_dir: Path) -> str:
    p, g = summary["patients"], summary["gaps"]
    return (f"{p['read']} patient(s) read: {p['inScope']} in scope, {p['outOfScope']} out of scope, "
            f"{p['withGaps']} with gaps ({g['total']} gap(s)); "
            f"{summary['setAside']['total']} line(s) set aside; rule pack {summary['rulePack']['version']}; "
            f"{summary['engine']}, {summary['workers']} worker(s); "
            f"outputs in {out_dir} (audit record {summary['audit']['seq']})")


def bulk_line(about: dict[str, Any], folder: Path) -> str:
    """The fetched export in one line: resources by type, and the server's own errors, named."""
    resources = ", ".join(f"{n} {rtype}" for rtype, n in about["resources"].items()) or "no resources"
    errors = about["errors"]
    said = f"; the server reported {errors['count']} error(s): {'; '.join(errors['names'])}" \
        if errors["count"] else ""
    return f"bulk export: {resources} in {sum(about['files'].values())} file(s) in {folder}{said}"


@click.command("gaps")
@click.argument("export", type=click.Path(), required=False)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for gaps.ndjson, gaps.csv, summary.json and report.html")
@click.option("--at", metavar="DATE", help="evaluation date (ISO, default today UTC)")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="worker processes of a local Dask cluster (default: the CPU count; 0 or 1: in this "
                   "process, without Dask; not used with --scheduler)")
@click.option("--scheduler", metavar="ADDRESS",
              help="a running Dask scheduler (tcp://host:port); its workers must reach EXPORT and the "
                   "scratch folder")
@click.option("--scratch", type=click.Path(file_okay=False),
              help="folder for the run's intermediate files (default: under --out)")
@click.option("--strict", is_flag=True, help="exit 1 when any line was set aside")
@click.option("--fhir-server", metavar="URL",
              help="instead of EXPORT: ask this FHIR server for a Bulk Data export (into --out/export) first")
@click.option("--group", metavar="ID", help="with --fhir-server: export the patients of this Group only")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="with --fhir-server: a file holding the bearer token to send (default: SMART Backend "
                   "Services with CDS_BULK_CLIENT_ID and CDS_BULK_KEY_FILE, else none)")
def gaps_cmd(export: str | None, out_dir: str, at: str | None, workers: int | None, scheduler: str | None,
             scratch: str | None, strict: bool, **more: Any) -> int:
    """Evaluate every patient of a FHIR Bulk Data EXPORT folder (NDJSON files) as patient-view would, and
    write their care gaps (DetectedIssues), a CSV, a summary and a report to --out."""
    from cds.population.run import run_gaps, today_utc
    from cds.review.cli import Failed

    fhir_server, group, token_file = more.get("fhir_server"), more.get("group"), more.get("token_file")
    if export is not None and fhir_server:
        raise click.UsageError("give the EXPORT folder or --fhir-server URL, not both")
    if export is None and not fhir_server:
        raise click.UsageError("give the EXPORT folder or --fhir-server URL")
    if not fhir_server and (group is not None or token_file is not None):
        option = "--group" if group is not None else "--token-file"
        raise click.UsageError(f"{option} goes with --fhir-server")
    if at:
        from cds.toolkit.offline import parse_at

        when = parse_at(at)
    else:
        when = today_utc()
    bulk_export = None
    export_dir = Path(str(export))
    if fhir_server:
        from cds import settings
        from cds.population.bulk import export as bulk_export_to

        folder = Path(out_dir) / "export"
        fetched = bulk_export_to(fhir_server, folder, settings.load(), group=group, token_file=token_file,
                                 say=lambda line: click.echo(line, err=True))
        bulk_export = fetched.summary(fhir_server, group)
        click.echo(bulk_line(bulk_export, folder), err=True)
        export_dir = folder
    try:
        summary = run_gaps(export_dir, Path(out_dir), at=when, workers=workers, scheduler=scheduler,
                           strict=strict, scratch=Path(scratch) if scratch else None, bulk_export=bulk_export)
    except ValueError as exc:  # export.Stopped and a bad --at: the run stopped, one line
        raise Failed(str(exc), code=2) from None
    click.echo(summary_line(summary, Path(out_dir)))
    return int(summary["exitStatus"])

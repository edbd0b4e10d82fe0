"""``cds gaps EXPORT --out DIR``: the care gaps of a whole population from a FHIR Bulk Data export.

    cds gaps EXPORT --out DIR [--at DATE] [--workers N] [--scheduler ADDRESS] [--scratch DIR] [--strict]

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
# --fhir-server options are added by cds/population/bulk.py (it downloads the export first, then this runs)
def gaps_cmd(export: str | None, out_dir: str, at: str | None, workers: int | None, scheduler: str | None,
             scratch: str | None, strict: bool, **more: Any) -> int:
    """Evaluate every patient of a FHIR Bulk Data EXPORT folder (NDJSON files) as patient-view would, and
    write their care gaps (DetectedIssues), a CSV, a summary and a report to --out."""
    from cds.population.run import run_gaps, today_utc
    from cds.review.cli import Failed

    # --fhir-server options are added by cds/population/bulk.py (they arrive in ``more``): with them the
    # export is downloaded first (into EXPORT, or a folder under --out) and read from there as any other
    if export is None:
        raise click.UsageError("give the EXPORT folder")
    if at:
        from cds.toolkit.offline import parse_at

        when = parse_at(at)
    else:
        when = today_utc()
    try:
        summary = run_gaps(Path(export), Path(out_dir), at=when, workers=workers, scheduler=scheduler,
                           strict=strict, scratch=Path(scratch) if scratch else None)
    except ValueError as exc:  # export.Stopped and a bad --at: the run stopped, one line
        raise Failed(str(exc), code=2) from None
    click.echo(summary_line(summary, Path(out_dir)))
    return int(summary["exitStatus"])

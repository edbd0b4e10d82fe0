"""``run_gaps``: a care-gap run over an export folder, in-process or on a Dask cluster, audited.

    find the files (export.find)  ->  map: each line to a bucket by its patient    (one task per file
                                                                                     or byte range)
                                  ->  reduce: each bucket's patients evaluated       (one task per bucket)
                                  ->  merge: gaps.ndjson, gaps.csv, report.html, summary.json
                                  ->  one record in the audit trail

Only file names, counts and the lines set aside travel between the driver and the workers: the lines
themselves go through the scratch folder, so the driver never holds the export. ``workers`` 0 or 1 runs
both phases in this process (no Dask); more starts a ``LocalCluster`` of that many processes (one thread
each); ``scheduler`` uses a running cluster, whose workers must reach the export and the scratch folder
(on a shared file system) and have the same rule pack installed (checked on each: a worker with another
pack stops the run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import logging
import math
import os
import shutil
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from cds import settings
from cds.hooks.services import prefetch_templates
from cds.ledger.runs import append_run, run_content
from cds.population import outputs, report
from cds.population.export import Export, Piece, Stopped, find, pieces, sha256_of
from cds.population.partition import (
    Job,
    PackMismatch,
    evaluator_for,
    fix_lines,
    map_piece,
    reduce_partition,
    use_pack,
)
from cds.rules.pack import RulePack
from cds.rules.pack import load as load_pack
from cds.toolkit.prefetch_answer import ReadPlan

#: input bytes per bucket: a reducer holds one bucket's lines in memory at a time
BUCKET_BYTES = 32 << 20
MAX_PARTITIONS = 512
PIECE_MIN, PIECE_MAX = 4 << 20, 64 << 20
OUTPUTS = ("gaps.ndjson", "gaps.csv", "report.html")
#: the engine a run names when it started its own cluster of worker processes (``--workers N``)
LOCAL_CLUSTER = "local Dask cluster"
#: the local cluster's workers: no sampling profiler (a thread walking the task's stack every 10 ms, taking
#: the GIL from it) and slower housekeeping ticks; a task is minutes of pure Python, which the defaults slow
#: by a third or more
LOCAL_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    # without MALLOC_TRIM_THRESHOLD_ (the nanny's default sets it to 64 kB, which also stops glibc from
    # adapting its mmap threshold: every large buffer of a task is then mapped and unmapped again)
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                            "OPENBLAS_NUM_THREADS": 1},
}


def today_utc() -> dt.datetime:
    """The default run date: today, at midnight UTC (two runs on one day give the same files)."""
    return dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(0), tzinfo=dt.UTC)


def piece_bytes(total_bytes: int, workers: int) -> int:
    """How much of a plain file one map task reads: with more than one worker files are split so that
    every worker has a few tasks, in pieces of PIECE_MIN to PIECE_MAX bytes (a gzip file is read whole);
    with one, each file is one task (read once: its sha256 is taken in the same pass)."""
    if workers <= 1:
        return max(1, total_bytes)
    return max(PIECE_MIN, min(PIECE_MAX, total_bytes // (workers * 4) + 1))


def partitions_for(total_bytes: int, workers: int) -> int:
    """Buckets: a few per worker (so that a slow one does not hold the run), and small enough in memory."""
    return max(1, min(MAX_PARTITIONS, max(workers * 4 if workers > 1 else 1,
                                          math.ceil(total_bytes / BUCKET_BYTES))))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def check_worker_pack(job: Job) -> str:
    """Run on each worker before the first task: its pack hash (``PackMismatch`` when it differs)."""
    return evaluator_for(job).pack.content_hash


class _Progress:
    """Patients done, rate and ETA on stderr (tqdm), only when stderr is a terminal."""

    def __init__(self, enabled: bool, total: int):
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="patient", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- engines -------------------------------------------------------------------------------------------------

class _Engine:
    name = "local"
    workers = 1

    def map(self, job: Job, shares: list[Piece]) -> list[dict[str, Any]]:
        return [map_piece(job, piece) for piece in shares]

    def reduce(self, job: Job, progress: _Progress) -> list[dict[str, Any]]:
        return [reduce_partition(job, p, on_patient=progress.update) for p in range(job.partitions)]

    def prepare(self, job: Job, pack: RulePack) -> None:
        use_pack(job, pack)  # the driver's pack, loaded once


class _Dask(_Engine):
    def __init__(self, client: Any, name: str | None = None):
        self.client = client
        #: a running cluster: its scheduler's address; the command's own: what it was (its address is gone
        #: when the run ends)
        self.name = name or str(client.scheduler.address)
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def prepare(self, job: Job, pack: RulePack) -> None:
        """Every worker loads the pack now, and says its hash: one with another pack stops the run."""
        hashes = self.client.run(check_worker_pack, job)
        mismatched = sorted(addr for addr, found in hashes.items() if found != job.pack_hash)
        if mismatched:
            raise PackMismatch(f"worker {mismatched[0]} has another rule pack than the run's "
                               f"(sha256 {job.pack_hash[:12]}): install the same rule pack on every worker")

    def map(self, job: Job, shares: list[Piece]) -> list[dict[str, Any]]:
        futures = self.client.map(partial(map_piece, job), shares, pure=False)
        return list(self.client.gather(futures))

    def reduce(self, job: Job, progress: _Progress) -> list[dict[str, Any]]:
        from distributed import as_completed

        futures = self.client.map(partial(reduce_partition, job), range(job.partitions), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[dict[str, Any] | None] = [None] * len(futures)
        for future in as_completed(futures):
            tally = future.result()
            results[index[future.key]] = tally
            progress.update(tally["patients"])
        return [r for r in results if r is not None]


@contextmanager
def _engine(workers: int, scheduler: str | None) -> Iterator[_Engine]:
    if not scheduler and workers <= 1:
        yield _Engine()
        return
    from distributed import Client, LocalCluster

    # a task's failure is the command's one line (its exception, raised here), not the workers' log lines
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny",
                 "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise Stopped(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield _Dask(client)
        finally:
            client.close()
        return
    import dask

    with dask.config.set(LOCAL_WORKER_CONFIG):  # handed to each worker process by its nanny
        cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    try:
        yield _Dask(client, name=LOCAL_CLUSTER)
    finally:
        client.close()
        cluster.close()


# -- the run ------------------------------------------------------------------------------------------------

def _path(value: Any) -> str | None:
    """A path setting as the workers open it (absolute); None (the packaged rules) when it is not set."""
    return str(Path(value).resolve()) if value else None


def _pack(values: dict[str, Any]) -> RulePack:
    return load_pack(values["RULES_DIR"] or None, values["SITE_CONFIG"] or None)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def run_gaps(export_dir: Path, out_dir: Path, *, at: dt.datetime, workers: int | None = None,
             scheduler: str | None = None, strict: bool = False, progress: bool = True,
             scratch: Path | None = None, bulk_export: dict[str, Any] | None = None,
             validate_all: bool = False) -> dict[str, Any]:
    """Run the rule pack over the export in ``export_dir``; write gaps.ndjson, gaps.csv, report.html and
    summary.json to ``out_dir``; append the run's audit record; return the summary.

    ``strict`` is recorded in the summary (``exitStatus``: 1 when it is set and anything was set aside).
    A file that cannot be read stops the run (``export.Stopped``, one line naming it). ``bulk_export``: where
    the export came from (``cds gaps --fhir-server``: cds/population/bulk.py), kept in the summary.
    ``validate_all``: every line validated as a whole by its R4B model, not only what the rule pack reads."""
    clock = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    values = settings.load()
    pack = _pack(values)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if out_dir.resolve() == export_dir.resolve():
        raise Stopped(f"--out {out_dir} is the export folder: give another (its gaps.ndjson would be read as "
                      "part of the export next time)")
    export = find(export_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    scratch_dir = Path(scratch or out_dir / ".gaps-scratch") / uuid.uuid4().hex
    scratch_dir.mkdir(parents=True)
    total_bytes = sum(os.path.getsize(f.path) for f in export.files)
    record_id = str(uuid.uuid4())
    try:
        with _engine(n_workers, scheduler) as engine:
            job = Job(scratch=str(scratch_dir.resolve()), at=at, pack_hash=pack.content_hash,
                      partitions=partitions_for(total_bytes, max(n_workers, engine.workers)),
                      rules_dir=_path(values["RULES_DIR"]), site_config=_path(values["SITE_CONFIG"]),
                      source_label=values["SOURCE_LABEL"], names=tuple(f.name for f in export.files),
                      validate_all=validate_all,
                      plan=None if validate_all else ReadPlan(prefetch_templates(pack)))
            engine.prepare(job, pack)
            shares = pieces(export, piece_bytes(total_bytes, engine.workers))
            mapped, offsets = fix_lines(engine.map(job, shares))
            job = dataclasses.replace(job, line_offsets=offsets)
            bar = _Progress(progress, sum(m["patients"] for m in mapped))
            try:
                tallies = engine.reduce(job, bar)
            finally:
                bar.close()
            engine_name, engine_workers = engine.name, engine.workers
        reduce_dir = scratch_dir / "reduce"
        gap_parts = sorted(reduce_dir.glob("p*.gaps"))
        patient_parts = sorted(reduce_dir.glob("p*.patients"))
        outputs.merge_gaps(gap_parts, out_dir / "gaps.ndjson", out_dir / "gaps.csv")
        summary = _summary(export, export_dir, pack, at, mapped, tallies)
        summary.update({"engine": engine_name, "workers": engine_workers, "partitions": job.partitions,
                        "strict": strict, "validateAll": validate_all, "audit": {"recordId": record_id}})
        if bulk_export is not None:
            summary["bulkExport"] = bulk_export
        (out_dir / "report.html").write_text(report.render(summary, outputs.merge_patients(patient_parts)),
                                            encoding="utf-8")
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
        try:
            scratch_dir.parent.rmdir()  # the default scratch folder, when no other run uses it
        except OSError:
            pass
    summary["outputs"] = [{"file": name, "sha256": sha256_of(out_dir / name),
                           "lines": _count_lines(out_dir / name)} for name in OUTPUTS]
    summary["elapsedSeconds"] = round(time.perf_counter() - clock, 3)
    aside = summary["setAside"]["total"]
    summary["exitStatus"] = 1 if strict and aside else 0
    (out_dir / "summary.json").write_bytes(outputs.dumps(summary))
    run = {
        "user": _user(), "host": socket.gethostname(), "at": at.isoformat(), "export": str(export_dir),
        "out": str(out_dir), "engine": engine_name, "workers": engine_workers, "strict": strict,
        "inputs": [{"file": i["file"], "sha256": i["sha256"], "lines": i["lines"]}
                   for i in summary["inputs"]],
        "outputs": [{"file": o["file"], "sha256": o["sha256"]} for o in summary["outputs"]]
                   + [{"file": "summary.json", "sha256": sha256_of(out_dir / "summary.json")}],
        "counts": {**summary["patients"], "gaps": summary["gaps"]["total"],
                   "perRule": summary["gaps"]["perRule"],
                   "perIndicator": summary["gaps"]["perIndicator"], "setAside": aside},
    }
    content = run_content(pack, started=started, elapsed_seconds=summary["elapsedSeconds"],
                          outcome="ok" if not aside else "set-aside", run=run, record_id=record_id)
    summary["audit"]["seq"] = append_run(values, content)
    return summary


def _summary(export: Export, export_dir: Path, pack: RulePack, at: dt.datetime, mapped: list[dict[str, Any]],
             tallies: list[dict[str, Any]]) -> dict[str, Any]:
    total = outputs.merge_tallies(tallies)
    # a Medication the call refuses is set aside by each patient whose order names it: listed once
    unique = {(i["file"], i["line"], i["kind"]): i for i in [item for m in mapped for item in m["setAside"]]
              + total["setAside"]}
    lines = sorted(unique.values(), key=outputs.set_aside_order)
    not_patient: Counter[str] = Counter()
    for m in mapped:
        not_patient.update(m["notPatientData"])
    out_of_scope = sum(total["outOfScope"].values())
    return {
        "at": at.isoformat(),
        "export": str(export_dir),
        "manifest": export.manifest,
        "rulePack": {"id": pack.id, "version": pack.version, "contentHash": pack.content_hash},
        "inputs": [{k: m[k] for k in ("file", "role", "listedType", "bytes", "sha256", "lines", "blank",
                                      "resources")} for m in mapped],
        "patients": {"read": total["patients"], "inScope": total["inScope"], "outOfScope": out_of_scope,
                     "notEvaluated": total["notEvaluated"], "setAside": total["patientsSetAside"],
                     "withGaps": total["withGaps"]},
        "outOfScope": total["outOfScope"],
        "gaps": {"total": total["gaps"], "perRule": total["perRule"], "perIndicator": total["perIndicator"]},
        "bySex": total["bySex"],
        "byAgeBand": total["byAgeBand"],
        "notPatientData": dict(sorted(not_patient.items())),
        "notReadByRulePack": total["notRead"],
        "exportErrors": sum(m["exportErrors"] for m in mapped),
        "setAside": {"total": len(lines), "byKind": dict(sorted(Counter(i["kind"] for i in lines).items())),
                     "lines": lines},
    }

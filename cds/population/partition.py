"""The two phases of a run, as plain functions over files in a scratch folder (a Dask task each, or a loop).

Map (``map_piece``, one task per share of the export: a gzip file, or a byte range of a plain file): each
line is read as raw text and its patient found cheaply (a ``Patient``'s id; another resource's
``subject``/``patient`` reference, resolved as the hook resolves it: ``Patient/id``, an absolute URL,
``urn:uuid:id``); the line goes, unchanged, to bucket ``crc32(patient) % partitions`` of the scratch
folder, prefixed with its file, piece and line number (``fix_lines`` makes it the file's). A
``Medication`` goes, once checked, to the file's medications file, which every reducer reads (a
MedicationRequest may name it by ``medicationReference``). A line that is no JSON object, has no
``resourceType`` or no resolvable patient is set aside with its file, line and reason; a resource that
belongs to no patient (a Practitioner, an Organization) is counted by type.

Reduce (``reduce_partition``, one task per bucket): the bucket's lines are grouped by patient, each
patient's resources in export order (file, then line); each resource is checked as R4 (the types the rules
read by the hook's own check, the others by their R4B model) and an invalid one set aside; lines whose
patient has no ``Patient`` in the export are set aside as orphans. Each patient is evaluated through the
hook's call layer (``gaps.PatientEvaluator``) and the partition's gaps written sorted by patient and rule,
with its counts returned; ``outputs.merge`` puts the partitions together.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cds.errors import CdsError
from cds.fhir.parse import r4_problem
from cds.fhir.references import parse as parse_reference
from cds.fhir.references import subject_reference
from cds.population.export import ExportFile, Piece, Stopped, lines, sha256_of
from cds.population.gaps import Outcome, PatientEvaluator
from cds.rules.pack import RulePack
from cds.rules.pack import load as load_pack

MEDICATION_FIELDS = ("medicationReference",)
AGE_BANDS = ((0, 18, "under 18"), (18, 50, "18-49"), (50, 65, "50-64"), (65, 75, "65-74"), (75, 200, "75+"))


class PackMismatch(Stopped):
    """A worker's rule pack is not the run's: the run stops rather than mix answers of two packs."""


@dataclass(frozen=True)
class Job:
    """What every task of a run needs (sent to the workers once per task; small)."""

    scratch: str
    partitions: int
    at: dt.datetime
    pack_hash: str
    rules_dir: str | None
    site_config: str | None
    source_label: str
    names: tuple[str, ...]  # the export files' names, by index
    #: ``"<file index>.<piece>"`` -> the lines of the file before that piece (known after the map phase)
    line_offsets: dict[str, int] = field(default_factory=dict)


def bucket_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % partitions


def _map_dir(job: Job) -> Path:
    return Path(job.scratch) / "map"


def _reduce_dir(job: Job) -> Path:
    return Path(job.scratch) / "reduce"


def _aside(kind: str, file: str, line: int, reason: str) -> dict[str, Any]:
    return {"kind": kind, "file": file, "line": line, "reason": reason}


def _name_of(obj: dict[str, Any]) -> str:
    rid = obj.get("id")
    return f"{obj.get('resourceType')}/{rid}" if isinstance(rid, str) else f"a {obj.get('resourceType')}"


def _bad_key(key: str) -> bool:
    return not key or any(c in key for c in "\t\r\n")


def route(obj: Any) -> tuple[str, str]:
    """Where a parsed line goes: ``("patient", key)``, ``("medication", id)``, ``("unlinked", type)`` or
    ``("bad", reason)``."""
    if not isinstance(obj, dict):
        return "bad", "not a JSON object"
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return "bad", "no resourceType"
    if rtype == "Patient":
        rid = obj.get("id")
        if not isinstance(rid, str) or _bad_key(rid):
            return "bad", "a Patient without a usable id"
        return "patient", rid
    if rtype == "Medication":
        rid = obj.get("id")
        if not isinstance(rid, str) or _bad_key(rid):
            return "bad", "a Medication without a usable id (no medicationReference can name it)"
        return "medication", rid
    reference = subject_reference(obj)
    if reference is None:
        if any(isinstance(obj.get(k), dict) for k in ("subject", "patient")):
            return "bad", f"{_name_of(obj)}: its subject names no patient by reference"
        return "unlinked", rtype
    target = parse_reference(reference)
    if target is None or target.contained or not target.id:
        return "bad", f"{_name_of(obj)}: its subject reference does not resolve to a patient"
    if target.type not in (None, "Patient"):
        return "unlinked", rtype
    if _bad_key(target.id):
        return "bad", f"{_name_of(obj)}: its subject reference does not resolve to a patient"
    return "patient", target.id


def map_file(job: Job, f: ExportFile) -> dict[str, Any]:
    """``map_piece`` of the whole of ``f``."""
    return map_piece(job, Piece(f, 0))


def map_piece(job: Job, piece: Piece) -> dict[str, Any]:
    """Write each line of ``piece`` to its patient's bucket; return its counts and the lines set aside (line
    numbers counted from the piece's start: ``fix_lines`` makes them the file's)."""
    out = _map_dir(job)
    out.mkdir(parents=True, exist_ok=True)
    f = piece.file
    stats: dict[str, Any] = {
        "file": f.name, "index": f.index, "piece": piece.index, "role": f.role, "listedType": f.listed_type,
        "bytes": os.path.getsize(f.path), "sha256": sha256_of(f.path) if piece.index == 0 else None,
        "lines": 0, "blank": 0, "patients": 0, "resources": Counter(), "notPatientData": Counter(),
        "exportErrors": 0, "setAside": [],
    }
    buckets: dict[int, Any] = {}
    meds = None
    stem = f"f{f.index:05d}.p{piece.index:05d}"
    try:
        for n, raw in lines(f, piece.start, piece.end):
            stats["lines"] = n
            if not raw.strip():
                stats["blank"] += 1
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                stats["setAside"].append(_aside("malformed", f.name, n, f"not JSON ({exc})"))
                continue
            kind, value = route(obj)
            if kind == "bad":
                stats["setAside"].append(_aside("malformed", f.name, n, value))
                continue
            stats["resources"][obj["resourceType"]] += 1
            if f.role == "error":  # the server's own OperationOutcomes: counted, not patient data
                stats["exportErrors"] += 1
            elif kind == "unlinked":
                stats["notPatientData"][value] += 1
            elif kind == "medication":
                problem = r4_problem(obj, where=f.name)
                if problem:
                    stats["setAside"].append(_aside("invalid", f.name, n, problem))
                    continue
                if meds is None:
                    meds = open(out / f"{stem}.meds", "wb")
                meds.write(f"{f.index}\t{piece.index}\t{n}\t{value}\t".encode() + raw + b"\n")
            else:
                stats["patients"] += obj["resourceType"] == "Patient"
                p = bucket_of(value, job.partitions)
                if p not in buckets:
                    buckets[p] = open(out / f"{stem}.b{p:04d}", "wb")
                buckets[p].write(f"{f.index}\t{piece.index}\t{n}\t{value}\t".encode() + raw + b"\n")
    finally:
        for handle in [*buckets.values(), *([meds] if meds else [])]:
            handle.close()
    stats["resources"] = dict(stats["resources"])
    stats["notPatientData"] = dict(stats["notPatientData"])
    return stats


def fix_lines(mapped: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The pieces' counts as one entry per file, in export order, their lines set aside numbered in the
    file; and each piece's offset (the lines of its file before it), for the reducers."""
    offsets: dict[str, int] = {}
    files: dict[int, dict[str, Any]] = {}
    for m in sorted(mapped, key=lambda m: (m["index"], m["piece"])):
        f = files.get(m["index"])
        offset = f["lines"] if f else 0
        offsets[f"{m['index']}.{m['piece']}"] = offset
        aside = [{**item, "line": item["line"] + offset} for item in m["setAside"]]
        if f is None:
            files[m["index"]] = {**m, "resources": Counter(m["resources"]),
                                 "notPatientData": Counter(m["notPatientData"]), "setAside": aside}
            continue
        for k in ("lines", "blank", "patients", "exportErrors"):
            f[k] += m[k]
        f["resources"].update(m["resources"])
        f["notPatientData"].update(m["notPatientData"])
        f["setAside"] += aside
        f["sha256"] = f["sha256"] or m["sha256"]
    merged = []
    for index in sorted(files):
        f = files[index]
        merged.append({**f, "resources": dict(sorted(f["resources"].items())),
                       "notPatientData": dict(sorted(f["notPatientData"].items()))})
    return merged, offsets


# -- reduce ------------------------------------------------------------------------------------------------

_EVALUATORS: dict[tuple[str | None, str | None, str], PatientEvaluator] = {}


def use_pack(job: Job, pack: RulePack) -> None:
    """Evaluate this process's tasks of ``job`` with ``pack`` (loaded already by the driver)."""
    key = (job.rules_dir, job.site_config, job.source_label)
    if key not in _EVALUATORS or _EVALUATORS[key].pack.content_hash != pack.content_hash:
        _EVALUATORS[key] = PatientEvaluator(pack, job.source_label)


def evaluator_for(job: Job) -> PatientEvaluator:
    """This process's evaluator for the job's rule pack; ``PackMismatch`` when the pack it loads is not the
    one the run started with (a worker installed with another pack)."""
    key = (job.rules_dir, job.site_config, job.source_label)
    found = _EVALUATORS.get(key)
    if found is None:
        try:
            pack = load_pack(job.rules_dir, job.site_config)
        except CdsError as exc:
            raise PackMismatch(f"worker {socket.gethostname()} (pid {os.getpid()}) cannot load the rule "
                               f"pack: {exc.message}") from None
        found = _EVALUATORS[key] = PatientEvaluator(pack, job.source_label)
    if found.pack.content_hash != job.pack_hash:
        raise PackMismatch(
            f"worker {socket.gethostname()} (pid {os.getpid()}) has rule pack {found.pack.version} "
            f"sha256 {found.pack.content_hash[:12]}, the run's is sha256 {job.pack_hash[:12]}: "
            "install the same rule pack on every worker")
    return found


def _medications(job: Job) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(_map_dir(job).glob("f*.meds")):
        with open(path, "rb") as stream:
            for raw in stream:
                _, _, _, key, text = raw.split(b"\t", 4)
                found.setdefault(key.decode(), orjson.loads(text))
    return found


def _groups(job: Job, p: int) -> dict[str, list[tuple[int, int, bytes]]]:
    groups: dict[str, list[tuple[int, int, bytes]]] = {}
    for path in sorted(_map_dir(job).glob(f"f*.b{p:04d}")):
        with open(path, "rb") as stream:
            for raw in stream:
                index, piece, line, key, text = raw.split(b"\t", 4)
                at = job.line_offsets.get(f"{int(index)}.{int(piece)}", 0) + int(line)
                groups.setdefault(key.decode(), []).append((int(index), at, text.rstrip(b"\n")))
    return groups


def age_band(patient: dict[str, Any], at: dt.datetime) -> str:
    born = patient.get("birthDate")
    if not isinstance(born, str) or len(born) < 4 or not born[:4].isdigit():
        return "unknown"
    try:
        month = int(born[5:7]) if len(born) >= 7 else 1
        day = int(born[8:10]) if len(born) >= 10 else 1
        birth = dt.date(int(born[:4]), month, day)
    except ValueError:
        return "unknown"
    today = at.date()
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return next((name for low, high, name in AGE_BANDS if low <= age < high), "unknown")


def _referenced_medications(resources: list[dict[str, Any]], meds: dict[str, dict[str, Any]]) -> list[dict]:
    found: dict[str, dict[str, Any]] = {}
    for resource in resources:
        for name in MEDICATION_FIELDS:
            value = resource.get(name)
            ref = value.get("reference") if isinstance(value, dict) else None
            target = parse_reference(ref)
            if target is None or target.contained or not target.id or target.type not in (None, "Medication"):
                continue
            if target.id in meds:
                found.setdefault(target.id, meds[target.id])
    return list(found.values())


class Tally:
    """A partition's counts (merged by the driver with ``add``)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {
            "patients": 0, "inScope": 0, "withGaps": 0, "notEvaluated": 0, "gaps": 0, "patientsSetAside": 0,
            "outOfScope": Counter(), "perRule": Counter(), "perIndicator": Counter(),
            "bySex": {}, "byAgeBand": {}, "setAside": [],
        }

    def group(self, name: str, value: str, patients: int = 0, in_scope: int = 0, with_gaps: int = 0,
              gaps: int = 0) -> None:
        row = self.data[name].setdefault(value, {"patients": 0, "inScope": 0, "withGaps": 0, "gaps": 0})
        row["patients"] += patients
        row["inScope"] += in_scope
        row["withGaps"] += with_gaps
        row["gaps"] += gaps

    def as_json(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.data.items()}


def reduce_partition(job: Job, p: int, on_patient: Callable[[], None] | None = None) -> dict[str, Any]:
    """Evaluate every patient of bucket ``p``; write its gaps (sorted by patient and rule) and its patients
    with gaps to the scratch folder; return its counts."""
    evaluator = evaluator_for(job)
    meds = _medications(job)
    groups = _groups(job, p)
    out = _reduce_dir(job)
    out.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    aside = tally.data["setAside"]
    with open(out / f"p{p:04d}.gaps", "wb") as gaps_out, open(out / f"p{p:04d}.patients", "wb") as people:
        for key in sorted(groups):
            entries = sorted(groups.pop(key))
            read = tally.data["patients"]
            outcome = _patient(job, evaluator, key, entries, meds, tally, aside)
            if on_patient is not None and tally.data["patients"] > read:  # a patient, evaluated or set aside
                on_patient()
            if outcome is None or not outcome[1].gaps:
                continue
            for gap in sorted(outcome[1].gaps, key=lambda g: g.rule):
                row = [gap.patient_id, gap.rule, gap.version, gap.indicator, gap.summary,
                       " ".join(gap.evidence)]
                gaps_out.write(orjson.dumps([gap.patient_id, gap.rule, gap.issue, row]) + b"\n")
            people.write(orjson.dumps([key, outcome[0], [[g.rule, g.indicator, g.summary]
                                                          for g in sorted(outcome[1].gaps,
                                                                          key=lambda g: g.rule)]]) + b"\n")
    return tally.as_json()


def _patient(job: Job, evaluator: PatientEvaluator, key: str, entries: list[tuple[int, int, bytes]],
             meds: dict[str, dict[str, Any]], tally: Tally, aside: list[dict[str, Any]],
             ) -> tuple[str, Outcome] | None:
    """One patient's lines: checked, evaluated and counted. Returns (sex, outcome) when evaluated."""
    parsed = [(job.names[i], n, orjson.loads(text), text) for i, n, text in entries]
    patients = [(name, n, obj, raw) for name, n, obj, raw in parsed if obj.get("resourceType") == "Patient"]
    if not patients:
        for name, n, obj, _ in parsed:
            aside.append(_aside("orphan", name, n, f"{_name_of(obj)}: its patient is not in the export"))
        return None
    first = patients[0]
    record: list[dict[str, Any]] = []
    models = evaluator.models
    patient_problem = r4_problem(first[2], where=f"{first[0]}:{first[1]}", raw=first[3], cache=models)
    for name, n, obj, raw in parsed:
        where = f"{name}:{n}"
        if obj is not first[2] and obj.get("resourceType") == "Patient":
            aside.append(_aside("duplicate", name, n,
                                "a second Patient with the same id (the first is used)"))
            continue
        if patient_problem:
            if obj is first[2]:
                aside.append(_aside("invalid", name, n, patient_problem))
            else:
                aside.append(_aside("orphan", name, n,
                                    f"{_name_of(obj)}: its Patient was set aside (not R4)"))
            continue
        problem = r4_problem(obj, where=where, raw=raw, cache=models) if obj is not first[2] else None
        if problem:
            aside.append(_aside("invalid", name, n, problem))
            continue
        record.append(obj)
    if patient_problem:  # read, and set aside: its Patient is not R4
        tally.data["patients"] += 1
        tally.data["patientsSetAside"] += 1
        return None
    record = [first[2]] + [r for r in record if r is not first[2]]
    record += _referenced_medications(record, meds)
    sex = str(first[2].get("gender") or "unknown")
    band = age_band(first[2], job.at)
    tally.data["patients"] += 1
    tally.group("bySex", sex, patients=1)
    tally.group("byAgeBand", band, patients=1)
    try:
        outcome = evaluator.evaluate(key, record, job.at)
    except CdsError as exc:
        tally.data["notEvaluated"] += 1
        aside.append(_aside("not-evaluated", first[0], first[1],
                            f"patient-view refused the record: {exc.message}"))
        return None
    if outcome.out_of_scope is not None:
        tally.data["outOfScope"][str(outcome.out_of_scope.get("code"))] += 1
        return sex, outcome
    tally.data["inScope"] += 1
    n = len(outcome.gaps)
    tally.group("bySex", sex, in_scope=1, with_gaps=int(n > 0), gaps=n)
    tally.group("byAgeBand", band, in_scope=1, with_gaps=int(n > 0), gaps=n)
    if n:
        tally.data["withGaps"] += 1
        tally.data["gaps"] += n
        for gap in outcome.gaps:
            tally.data["perRule"][gap.rule] += 1
            tally.data["perIndicator"][gap.indicator] += 1
    return sex, outcome

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
import functools
import gc
import hashlib
import os
import socket
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cds.errors import CdsError
from cds.fhir.parse import call_problem, is_r4_resource_type, r4_problem
from cds.fhir.references import parse as parse_reference
from cds.fhir.references import subject_reference
from cds.population.export import ExportFile, Piece, Stopped, is_gzip, lines, sha256_of
from cds.population.gaps import Outcome, PatientEvaluator
from cds.rules.pack import RulePack
from cds.rules.pack import load as load_pack
from cds.toolkit.prefetch_answer import ReadPlan

MEDICATION_FIELDS = ("medicationReference",)
#: a bucket line that holds, instead of resources, the type and ids of up to STUB_RUN consecutive lines of
#: one patient that no template selects (``-"Type"<tab>count<tab>["id", ...]``, JSON never holding a raw
#: tab; numbered from the bucket line's own line number; no JSON object starts with "-")
STUB = b"-"
STUB_RUN = 1024
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
    #: every line validated as a whole by the R4B model of its type (``cds gaps --validate-all``), not only
    #: what the rule pack's prefetch templates select
    validate_all: bool = False
    #: the resources the pack's prefetch templates can select (``ReadPlan``): the map phase sends the other
    #: lines to their bucket as stubs (type and name: counted, never parsed again); None: every line whole
    plan: ReadPlan | None = None


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
    found = _patient_named(reference)
    if found is None:
        return "bad", f"{_name_of(obj)}: its subject reference does not resolve to a patient"
    return ("patient", found) if found else ("unlinked", rtype)


@functools.lru_cache(maxsize=4096)
def _patient_named(reference: str) -> str | None:
    """The patient key a subject reference names; "" when it names something else than a Patient; None when
    it resolves to nothing usable. (Cached: an export's lines name the same patient again and again.)"""
    target = parse_reference(reference)
    if target is None or target.contained or not target.id:
        return None
    if target.type not in (None, "Patient"):
        return ""
    if _bad_key(target.id):
        return None
    return target.id


def _write_stubs(prefix: bytes, run: list[Any]) -> None:
    bucket, key_text, kind_json, first, _, ids = run
    bucket.write(b"%s%d\t%s%s%s\t%d\t%s\n" % (prefix, first, key_text, STUB, kind_json, len(ids),
                                                 orjson.dumps(ids)))


def _names_medication(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` names a Medication by reference (it then stays in its patient's record, which the
    reducer looks the Medications up for)."""
    for name in MEDICATION_FIELDS:
        if isinstance(obj.get(name), dict):
            return True
    return False


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
        "bytes": os.path.getsize(f.path), "sha256": None,
        "lines": 0, "blank": 0, "patients": 0, "resources": Counter(), "notPatientData": Counter(),
        "exportErrors": 0, "setAside": [],
    }
    buckets: dict[int, Any] = {}
    meds = None
    stem = f"f{f.index:05d}.p{piece.index:05d}"
    plan = None if job.validate_all else job.plan
    whole = piece.start == 0 and piece.end is None and not is_gzip(f)
    digest = hashlib.sha256() if whole else None  # a plain file read whole: its sha256 in the same pass
    if piece.index == 0 and not whole:
        stats["sha256"] = sha256_of(f.path)
    type_json: dict[str, bytes] = {}  # a stub's type, as JSON
    prefix = f"{f.index}\t{piece.index}\t".encode()
    resources: Counter[str] = stats["resources"]
    set_aside: list[dict[str, Any]] = stats["setAside"]
    keys: dict[str, tuple[int, bytes]] = {}  # a patient key: its bucket, and its text in a bucket line
    loads, partitions, error_file = orjson.loads, job.partitions, f.role == "error"
    n = blank = patients = 0
    #: the stubs of consecutive lines of one patient and type, written as one bucket line:
    #: [bucket, key as written, type as JSON, first line, last line, ids]
    run: list[Any] | None = None
    try:
        for n, raw in lines(f, piece.start, piece.end, digest=digest):
            if raw[:1] != b"{" and not raw.strip():
                blank += 1
                continue
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:
                set_aside.append(_aside("malformed", f.name, n, f"not JSON ({exc})"))
                continue
            kind, value = route(obj)
            if kind == "bad":
                set_aside.append(_aside("malformed", f.name, n, value))
                continue
            rtype = obj["resourceType"]
            resources[rtype] += 1
            if error_file:  # the server's own OperationOutcomes: counted, not patient data
                stats["exportErrors"] += 1
            elif kind == "unlinked":
                stats["notPatientData"][value] += 1
            elif kind == "medication":
                problem = r4_problem(obj, where=f.name) if job.validate_all else None
                if problem:
                    set_aside.append(_aside("invalid", f.name, n, problem))
                    continue
                if meds is None:
                    meds = open(out / f"{stem}.meds", "wb")
                meds.write(f"{f.index}\t{piece.index}\t{n}\t{value}\t".encode() + raw + b"\n")
            else:
                patients += rtype == "Patient"
                known = keys.get(value)
                if known is None:
                    if len(keys) > 4096:
                        keys.clear()
                    known = keys[value] = (bucket_of(value, partitions), value.encode() + b"\t")
                p, key_text = known
                bucket = buckets.get(p)
                if bucket is None:
                    bucket = buckets[p] = open(out / f"{stem}.b{p:04d}", "wb")
                if plan is None or plan.may_select(obj) or _names_medication(obj):
                    bucket.write(b"%s%d\t%s%s\n" % (prefix, n, key_text, raw))
                else:  # no template of the pack selects it: its type and id are all the reducer needs
                    kind_json = type_json.get(rtype) or type_json.setdefault(rtype, orjson.dumps(rtype))
                    rid = obj.get("id")
                    if run is not None and run[4] == n - 1 and run[2] == kind_json and run[1] == key_text \
                            and len(run[5]) < STUB_RUN:
                        run[4] = n
                        run[5].append(rid if isinstance(rid, str) else None)
                    else:
                        if run is not None:
                            _write_stubs(prefix, run)
                        run = [bucket, key_text, kind_json, n, n, [rid if isinstance(rid, str) else None]]
        if run is not None:
            _write_stubs(prefix, run)
    finally:
        for handle in [*buckets.values(), *([meds] if meds else [])]:
            handle.close()
    stats["lines"], stats["blank"], stats["patients"] = n, blank, patients
    if digest is not None:
        stats["sha256"] = digest.hexdigest()
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

_EVALUATORS: dict[tuple[str | None, str | None, str, bool], PatientEvaluator] = {}


def _settled(evaluator: PatientEvaluator) -> PatientEvaluator:
    """``evaluator``, with everything this process holds so far (its modules, the rule pack, the service)
    moved out of the garbage collector's view (``gc.freeze``): a task allocates millions of short-lived
    objects, and each full collection would otherwise walk the whole long-lived heap again (a Dask worker's
    is larger than the command's: measured, a reduce task took 1.6 x the CPU in a worker without this)."""
    gc.collect()
    gc.freeze()
    return evaluator


def use_pack(job: Job, pack: RulePack) -> None:
    """Evaluate this process's tasks of ``job`` with ``pack`` (loaded already by the driver)."""
    key = (job.rules_dir, job.site_config, job.source_label, job.validate_all)
    if key not in _EVALUATORS or _EVALUATORS[key].pack.content_hash != pack.content_hash:
        _EVALUATORS[key] = _settled(PatientEvaluator(pack, job.source_label, keep_models=job.validate_all))


def evaluator_for(job: Job) -> PatientEvaluator:
    """This process's evaluator for the job's rule pack; ``PackMismatch`` when the pack it loads is not the
    one the run started with (a worker installed with another pack)."""
    key = (job.rules_dir, job.site_config, job.source_label, job.validate_all)
    found = _EVALUATORS.get(key)
    if found is None:
        try:
            pack = load_pack(job.rules_dir, job.site_config)
        except CdsError as exc:
            raise PackMismatch(f"worker {socket.gethostname()} (pid {os.getpid()}) cannot load the rule "
                               f"pack: {exc.message}") from None
        found = _EVALUATORS[key] = _settled(PatientEvaluator(pack, job.source_label,
                                                             keep_models=job.validate_all))
    if found.pack.content_hash != job.pack_hash:
        raise PackMismatch(
            f"worker {socket.gethostname()} (pid {os.getpid()}) has rule pack {found.pack.version} "
            f"sha256 {found.pack.content_hash[:12]}, the run's is sha256 {job.pack_hash[:12]}: "
            "install the same rule pack on every worker")
    return found


def _medications(job: Job) -> dict[str, tuple[dict[str, Any], str, int]]:
    """The export's Medications by id (the first of an id), each with its file and line."""
    found: dict[str, tuple[dict[str, Any], str, int]] = {}
    for path in sorted(_map_dir(job).glob("f*.meds")):
        with open(path, "rb") as stream:
            for raw in stream:
                index, piece, line, key, text = raw.split(b"\t", 4)
                if key.decode() not in found:
                    at = job.line_offsets.get(f"{int(index)}.{int(piece)}", 0) + int(line)
                    found[key.decode()] = (orjson.loads(text), job.names[int(index)], at)
    return found


def _groups(job: Job, p: int) -> dict[str, list[tuple[int, int, bytes]]]:
    groups: dict[bytes, list[tuple[int, int, bytes]]] = {}
    offsets = {key.encode(): at for key, at in job.line_offsets.items()}
    for path in sorted(_map_dir(job).glob(f"f*.b{p:04d}")):
        with open(path, "rb") as stream:
            for raw in stream:
                index, piece, line, key, text = raw.split(b"\t", 4)
                at = offsets.get(index + b"." + piece, 0) + int(line)
                found = groups.get(key)
                if found is None:
                    found = groups[key] = []
                found.append((int(index), at, text[:-1] if text[-1:] == b"\n" else text))
    return {key.decode(): entries for key, entries in groups.items()}


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


def _referenced_medications(resources: list[dict[str, Any]], meds: dict[str, tuple[dict[str, Any], str, int]],
                            ) -> list[tuple[dict[str, Any], str, int]]:
    found: dict[str, tuple[dict[str, Any], str, int]] = {}
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
            "bySex": {}, "byAgeBand": {}, "setAside": [], "notRead": Counter(),
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


def _checked(job: Job, name: str, n: int, obj: dict[str, Any], raw: bytes | None,
             evaluator: PatientEvaluator) -> str | None:
    """A line's own check before its patient's request is built: with ``validate_all`` its full R4 check
    (``r4_problem``), else only that its resourceType names an R4 resource (the call checks what it reads)."""
    where = f"{name}:{n}"
    if job.validate_all:
        return r4_problem(obj, where=where, raw=raw, cache=evaluator.models)
    return _type_problem(where, obj["resourceType"])


def _type_problem(where: str, rtype: str) -> str | None:
    if not is_r4_resource_type(rtype):
        return f"{where}: resourceType {rtype!r} is not an R4 resource type"
    return None


def _selected(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The resources the request's prefetch holds (what its templates select), by identity: the request
    is the one ``PatientEvaluator.request`` built (each answer a resource, a searchset Bundle or None)."""
    found: dict[int, dict[str, Any]] = {}
    for data in (body.get("prefetch") or {}).values():
        if not isinstance(data, dict):
            continue
        if data.get("resourceType") != "Bundle":
            found.setdefault(id(data), data)
            continue
        for entry in data.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                found.setdefault(id(resource), resource)
    return found


def _stub_name(kind_json: bytes, rid: Any) -> str:
    return _name_of({"resourceType": orjson.loads(kind_json), "id": rid})


def _patient(job: Job, evaluator: PatientEvaluator, key: str, entries: list[tuple[int, int, bytes]],
             meds: dict[str, tuple[dict[str, Any], str, int]], tally: Tally, aside: list[dict[str, Any]],
             ) -> tuple[str, Outcome] | None:
    """One patient's lines: checked, evaluated and counted. Returns (sex, outcome) when evaluated.

    Each line gets the map phase's cheap checks (an R4 resource type); with ``job.validate_all`` it is also
    validated as a whole by the R4B model of its type (``r4_problem``). The patient-view request is then
    built and called, and the call validates what its prefetch selects, as for any hook call. When the call
    refuses the request, each resource it selected is checked as the call checks it (``call_problem``) and
    one it would refuse set aside with its file and line (the Patient: the patient and every line of it), and
    the call made again without them. Lines no template selects are counted by type as not read by the rule
    pack."""
    parsed: list[tuple[str, int, dict[str, Any], bytes]] = []
    stub_kinds: dict[bytes, int] = {}  # the stubs' types (as JSON), counted
    for i, n, text in entries:
        if text[:1] == STUB:
            kind_json, lines_sent, _ = text[1:].split(b"\t", 2)
            stub_kinds[kind_json] = stub_kinds.get(kind_json, 0) + int(lines_sent)
        else:
            parsed.append((job.names[i], n, orjson.loads(text), text))

    def stubs(kinds: Any = None) -> Iterator[tuple[str, int, bytes, Any]]:
        """(file, line, type as JSON, id) of each line sent as a stub (of the types ``kinds``, else all)."""
        if not stub_kinds:
            return
        for i, n, text in entries:
            if text[:1] == STUB:
                kind_json, _, ids = text[1:].split(b"\t", 2)
                if kinds is None or kind_json in kinds:
                    for k, rid in enumerate(orjson.loads(ids)):
                        yield job.names[i], n + k, kind_json, rid
    first = next((line for line in parsed if line[2].get("resourceType") == "Patient"), None)
    if first is None:
        for name, n, obj, _ in parsed:
            aside.append(_aside("orphan", name, n, f"{_name_of(obj)}: its patient is not in the export"))
        for name, n, kind_json, rid in stubs():
            aside.append(_aside("orphan", name, n, f"{_stub_name(kind_json, rid)}: its patient is not in "
                                                   "the export"))
        return None
    others = []
    for line in parsed:
        if line[2].get("resourceType") != "Patient":
            others.append(line)
        elif line is not first:
            aside.append(_aside("duplicate", line[0], line[1],
                                "a second Patient with the same id (the first is used)"))

    def patient_set_aside(problem: str) -> None:
        aside.append(_aside("invalid", first[0], first[1], problem))
        for name, n, obj, _ in others:
            aside.append(_aside("orphan", name, n, f"{_name_of(obj)}: its Patient was set aside (not R4)"))
        for name, n, kind_json, rid in stubs():
            aside.append(_aside("orphan", name, n, f"{_stub_name(kind_json, rid)}: its Patient was set "
                                                   "aside (not R4)"))
        tally.data["patients"] += 1
        tally.data["patientsSetAside"] += 1

    patient = first[2]
    problem = _checked(job, first[0], first[1], patient, first[3], evaluator)
    if problem:
        patient_set_aside(problem)
        return None
    invalid: list[dict[str, Any]] = []
    origin: dict[int, tuple[str, int]] = {id(patient): (first[0], first[1])}
    record: list[dict[str, Any]] = [patient]
    for name, n, obj, raw in others:
        problem = _checked(job, name, n, obj, raw, evaluator)
        if problem:
            invalid.append(_aside("invalid", name, n, problem))
            continue
        record.append(obj)
        origin[id(obj)] = (name, n)
    unread: Counter[str] = Counter()
    not_r4: set[bytes] = set()
    for kind_json, count in stub_kinds.items():
        rtype = str(orjson.loads(kind_json))
        if is_r4_resource_type(rtype):
            unread[rtype] += count
        else:
            not_r4.add(kind_json)
    for name, n, kind_json, _ in stubs(not_r4) if not_r4 else ():
        invalid.append(_aside("invalid", name, n,
                              str(_type_problem(f"{name}:{n}", str(orjson.loads(kind_json))))))
    own = len(record)
    for med, name, n in _referenced_medications(record, meds):
        record.append(med)
        origin[id(med)] = (name, n)
    body = evaluator.request(record)
    outcome: Outcome | CdsError
    try:
        outcome = evaluator.call(key, body, job.at)
    except CdsError as exc:
        outcome = exc
        relevant, models = evaluator.service.evaluator.relevant, evaluator.models
        problem = call_problem(patient, where=f"{first[0]}:{first[1]}", relevant=relevant, cache=models)
        if problem:
            patient_set_aside(problem)
            return None
        refused: set[int] = set()
        for ident, resource in _selected(body).items():
            if resource is patient or ident not in origin:
                continue
            name, n = origin[ident]
            problem = call_problem(resource, where=f"{name}:{n}", relevant=relevant, cache=models)
            if problem:
                invalid.append(_aside("invalid", name, n, problem))
                refused.add(ident)
        if refused:
            own -= sum(1 for r in record[:own] if id(r) in refused)
            record = [r for r in record if id(r) not in refused]
            body = evaluator.request(record)
            try:
                outcome = evaluator.call(key, body, job.at)
            except CdsError as again:
                outcome = again
    aside.extend(invalid)
    selected = _selected(body)
    unread.update(r["resourceType"] for r in record[:own] if id(r) not in selected)
    tally.data["notRead"].update(unread)
    sex = str(patient.get("gender") or "unknown")
    band = age_band(patient, job.at)
    tally.data["patients"] += 1
    tally.group("bySex", sex, patients=1)
    tally.group("byAgeBand", band, patients=1)
    if isinstance(outcome, CdsError):
        tally.data["notEvaluated"] += 1
        aside.append(_aside("not-evaluated", first[0], first[1],
                            f"patient-view refused the record: {outcome.message}"))
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

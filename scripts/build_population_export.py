"""Write ``fixtures/population-export/``: the realistic corpus as a FHIR Bulk Data export, for ``cds gaps``.

    .venv/bin/python scripts/build_population_export.py [OUT]

Every bundle of ``fixtures/realistic/`` gives its Patient, Observations, MedicationRequests and Medications
(the types patient-view reads), written as NDJSON the way servers name their files: ``Patient.ndjson``,
the Observations split over ``Observation.000.ndjson`` and ``Observation.001.ndjson.gz`` (gzip, written
reproducibly), the MedicationRequests as ``1.MedicationRequest.ndjson`` (as the SMART reference server
names them), and the ``$export`` status body as ``manifest.json``. Resources keep their order in the
bundles (bundles by name). ``tests/test_population.py`` checks the committed folder is what this writes.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "realistic"
OUT = ROOT / "fixtures" / "population-export"
TYPES = ("Patient", "Observation", "MedicationRequest", "Medication")
BASE = "https://bulk.example.org/fhir/bulkfiles"
TRANSACTION_TIME = "2026-11-22T06:00:00+00:00"


def resources() -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    for path in sorted(CORPUS.glob("*.json")):
        if path.name.endswith(".expected.json"):
            continue
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] in by_type:
                by_type[resource["resourceType"]].append(resource)
    return by_type


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in items).encode()


def gzipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(data)
    return buffer.getvalue()


def files() -> dict[str, bytes]:
    """The export's files by name (manifest.json last)."""
    by_type = resources()
    half = (len(by_type["Observation"]) + 1) // 2
    out: dict[str, tuple[str, bytes]] = {
        "Patient.ndjson": ("Patient", ndjson(by_type["Patient"])),
        "Observation.000.ndjson": ("Observation", ndjson(by_type["Observation"][:half])),
        "Observation.001.ndjson.gz": ("Observation", gzipped(ndjson(by_type["Observation"][half:]))),
        "1.MedicationRequest.ndjson": ("MedicationRequest", ndjson(by_type["MedicationRequest"])),
    }
    if by_type["Medication"]:
        out["Medication.ndjson"] = ("Medication", ndjson(by_type["Medication"]))
    manifest = {
        "transactionTime": TRANSACTION_TIME,
        "request": f"https://bulk.example.org/fhir/$export?_type={','.join(TYPES)}",
        "requiresAccessToken": False,
        "output": [{"type": kind, "url": f"{BASE}/{name}"} for name, (kind, _) in out.items()],
        "error": [],
    }
    written = {name: data for name, (_, data) in out.items()}
    written["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return written


def write(folder: Path = OUT) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (folder / name).write_bytes(data)
    return len(files())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    print(f"wrote {write(target)} files to {target}")

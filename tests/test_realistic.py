"""The realistic-data corpus (fixtures/realistic/): what the generator writes, and the shapes it claims.

Every fixture there is also evaluated against its sidecar by ``tests/test_fixtures.py`` and replayed
against a live server by ``tests/test_cli_live.py``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_realistic  # noqa: E402

CORPUS = ROOT / "fixtures" / "realistic"


def load(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))


def test_the_committed_corpus_is_what_the_generator_writes():
    for name, build in build_realistic.FIXTURES.items():
        bundle, expected = build()
        assert load(name) == bundle, f"{name}: run scripts/build_realistic.py"
        assert json.loads((CORPUS / f"{name}.expected.json").read_text()) == expected, name
    written = {p.name.removesuffix(".expected.json") for p in CORPUS.glob("*.expected.json")}
    assert written == set(build_realistic.FIXTURES)


def test_synthea_bundles_have_synthea_shapes():
    for name in [n for n in build_realistic.FIXTURES if n.startswith("synthea-")]:
        bundle = load(name)
        assert bundle["type"] == "transaction"
        entries = bundle["entry"]
        assert len(entries) >= 200, name
        assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" and e["request"]["method"] == "POST"
                   for e in entries)
        kinds = Counter(e["resource"]["resourceType"] for e in entries)
        assert {"Encounter", "Claim", "ExplanationOfBenefit", "Condition", "Immunization"} <= set(kinds), name
        patient = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient")
        subjects = {e["resource"].get("subject", e["resource"].get("patient", {})).get("reference")
                    for e in entries if e["resource"]["resourceType"] != "Patient"}
        assert subjects == {f"urn:uuid:{patient['id']}"}, name
        values = [e["resource"]["valueQuantity"]["value"] for e in entries
                  if "valueQuantity" in e["resource"]]
        assert any(len(repr(v).replace("-", "").replace(".", "")) >= 16 for v in values), name


def test_synthea_dxa_and_alendronic_acid_codes():
    bundle = load("synthea-woman-letrozole-osteoporosis-on-alendronic-acid")
    entries = [e["resource"] for e in bundle["entry"]]
    codes = {(c["system"], c["code"]) for r in entries for key in ("code", "medicationCodeableConcept")
             for c in (r.get(key) or {}).get("coding", [])}
    assert ("http://loinc.org", "38265-5") in codes
    assert ("http://www.nlm.nih.gov/research/umls/rxnorm", "904419") in codes
    t_score = next(r for r in entries if r["resourceType"] == "Observation"
                   and r["code"]["coding"][0]["code"] == "38265-5")
    assert t_score["valueQuantity"]["unit"] == "{T-score}"


def test_sandbox_orders_are_sloppy_as_the_sandbox_sends_them():
    entries = [e["resource"] for e in load("sandbox-woman-anastrozole-dxa-ordered-cpt-77080")["entry"]]
    drafts = [r for r in entries if r.get("status") == "draft"]
    assert {r["resourceType"] for r in drafts} == {"MedicationRequest", "ServiceRequest"}
    for r in drafts:
        assert isinstance(r["category"], dict)
        concept = r.get("medicationCodeableConcept") or r["code"]
        assert concept["coding"][0] == {}

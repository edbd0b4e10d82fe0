"""A lab analyte is data: one more entry under ``labs`` in valuesets.yaml (its LOINC codes, units and the
prefetch key that asks for it) and the monitoring prefetch query asks for its codes, the facts stage reads
its results and ``cds rules check`` accepts the pack, with no Python edited (docs/rules.md, "Adding an
analyte")."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import yaml
from builders import LOINC, obs

from cds.cli import main
from cds.decide.facts import Context, build_facts
from cds.fhir import parse as fhir_parse
from cds.hooks.services import discovery_document, prefetch_templates
from cds.rules import pack as rulepack

#: free testosterone, mass (clinical reference, "Codes": LOINC 2991-8); no rule reads it
FREE_TESTOSTERONE = {"title": "Testosterone (free)", "canonical_unit": "pg/mL", "loinc": ["2991-8"],
                     "prefetch": "monitoring", "units": {"pg/mL": 1}}


def _pack_with_free_testosterone(tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(rulepack.DEFAULT_DIR, target, ignore=shutil.ignore_patterns("archive"))
    path = target / "valuesets.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["labs"]["free_testosterone"] = FREE_TESTOSTERONE
    data["code_sources"]["loinc"]["2991-8"] = {"display": "Testosterone, free [Mass/volume]",
                                               "source": "LOINC, per the clinical reference (Codes)"}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def test_an_analyte_added_in_data_is_asked_for_by_the_monitoring_prefetch(tmp_path, capsys):
    shipped = prefetch_templates(rulepack.load())
    assert f"{LOINC}|2991-8" not in shipped["monitoring"]
    folder = _pack_with_free_testosterone(tmp_path)

    assert main(["rules", "check", str(folder)]) == 0
    assert "rules OK" in capsys.readouterr().out
    assert main(["rules", "valuesets", str(folder)]) == 0  # every code says where it was verified
    assert "2991-8" in capsys.readouterr().out
    pack = rulepack.load(folder)
    templates = prefetch_templates(pack)
    assert templates["monitoring"] == shipped["monitoring"] + f",{LOINC}|2991-8"
    assert {k: v for k, v in templates.items() if k != "monitoring"} == \
        {k: v for k, v in shipped.items() if k != "monitoring"}
    for service in discovery_document(pack)["services"]:
        assert service["prefetch"]["monitoring"].endswith(f",{LOINC}|2991-8")


def test_the_facts_stage_reads_the_added_analyte(tmp_path):
    pack = rulepack.load(_pack_with_free_testosterone(tmp_path))
    model = fhir_parse.parse_resource(obs("2991-8", 95.0, "pg/mL", "2026-11-01"), where="test")
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    facts = build_facts([model], [], Context(patient_id="p1", now=now), pack.valuesets).facts
    labs = [f for f in facts if f["t"] == "lab"]
    assert [(f["analyte"], f["value"]) for f in labs] == [("free_testosterone", 95.0)]


def test_an_analyte_without_a_known_prefetch_key_is_refused(tmp_path, capsys):
    folder = _pack_with_free_testosterone(tmp_path)
    path = folder / "valuesets.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["labs"]["free_testosterone"]["prefetch"] = "hormones"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert main(["rules", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "labs.free_testosterone.prefetch must name the prefetch key that asks for it" in err
    assert "'hormones'" in err

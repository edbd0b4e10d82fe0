"""The rule-pack check: the shipped pack passes, and each kind of broken rule file is caught and named."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.cli import main
from cds.errors import RulePackError
from cds.rules import pack as rulepack


def test_shipped_pack_is_clean():
    pack = rulepack.load()
    assert pack.version == "0.6.0"
    assert len(pack.active_rules) >= 20
    assert all(r.citations and r.citations[0]["url"].startswith("https://") for r in pack.rules)


def test_cli_check_reports_ok(capsys):
    assert main(["rules", "check"]) == 0
    out = capsys.readouterr().out
    assert "rules OK" in out and "0.6.0" in out


def _copy_pack(tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(rulepack.DEFAULT_DIR, target, ignore=shutil.ignore_patterns("archive"))
    return target


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _rule(pack: Path, rule_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    _edit(pack / "rules" / f"{rule_id}.yaml", change)


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key in keys[:-1]:
            data = data[key] if not isinstance(data, list) else data[int(key)]
        data[keys[-1] if not isinstance(data, list) else int(keys[-1])] = value

    return change


LOW_E2 = "low-estradiol-on-ai"
VIT_D = "vitamin-d-missing"

BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "pack version": (lambda p: _edit(p / "pack.yaml", _set("version", value="1.0")), "not semantic"),
    "rule version": (lambda p: _rule(p, LOW_E2, _set("version", value="v2")), "'v2' is not semantic"),
    "citation url": (
        lambda p: _rule(p, LOW_E2, _set("citations", "0", "url", value="http://example.org")),
        "https:// url",
    ),
    "no citation": (lambda p: _rule(p, LOW_E2, _set("citations", value=[])), "at least one citation"),
    "long summary": (lambda p: _rule(p, VIT_D, _set("card", "summary", value="x" * 140)), "under 140"),
    "long summary via placeholders": (
        lambda p: _rule(p, VIT_D, _set("card", "summary", value="{ai.ingredient} " * 8 + "x" * 20)),
        "under 140",
    ),
    "unknown threshold in condition": (
        lambda p: _rule(
            p, LOW_E2, _set("match", "all", "2", "where", "value", value={"lt": {"threshold": "nope"}})
        ),
        "threshold 'nope'",
    ),
    "unknown threshold in text": (
        lambda p: _rule(p, VIT_D, _set("card", "detail", value="{threshold.missing_one}")),
        "unknown threshold",
    ),
    "unknown threshold listed": (lambda p: _rule(p, VIT_D, _set("thresholds", value=["gone"])), "'gone'"),
    "unknown drug class": (
        lambda p: _edit(
            p / "rules" / "on-aromatase-inhibitor.yaml",
            _set("match", "all", "0", "where", "drug_class", value="aromatase_blockers"),
        ),
        "'aromatase_blockers' is not in valuesets.yaml medications",
    ),
    "unknown analyte": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "2", "where", "analyte", value="oestradiol")),
        "'oestradiol' is not in valuesets.yaml labs",
    ),
    "unknown order kind": (
        lambda p: _rule(p, VIT_D, _set("match", "none", "1", "where", "kind", value="vit_d")),
        "'vit_d' is not in valuesets.yaml orders",
    ),
    "unknown unless_ordered": (
        lambda p: _rule(p, VIT_D, _set("card", "suggestions", "0", "unless_ordered", value="nothing")),
        "unless_ordered 'nothing'",
    ),
    "override reason without a period": (
        lambda p: _rule(p, VIT_D, _set("card", "override_reasons", "2", "period", value=None)),
        "(patient-declined): a silencing reason needs a period",
    ),
    "override reason with an unknown period": (
        lambda p: _rule(p, VIT_D, _set("card", "override_reasons", "2", "period", value="for_ever_days")),
        "a threshold in thresholds.yaml (got 'for_ever_days')",
    ),
    "override reason period not in days": (
        lambda p: _rule(p, VIT_D,
                        _set("card", "override_reasons", "2", "period", value="estradiol_low_pg_ml")),
        "its period estradiol_low_pg_ml must be in days",
    ),
    "override reason without a display": (
        lambda p: _rule(p, VIT_D, _set("card", "override_reasons", "1", "display", value="")),
        "every override reason needs a code and a display",
    ),
    "override reason doing nothing known": (
        lambda p: _rule(p, VIT_D, _set("card", "override_reasons", "1", "does", value="hide")),
        "does must be one of ['silence', 'record']",
    ),
    "override reasons without a standard one": (
        lambda p: _rule(p, VIT_D, lambda d: d["card"]["override_reasons"].pop()),
        "lacks the standard reason(s) next-visit",
    ),
    "no override reasons": (
        lambda p: _rule(p, VIT_D, _set("card", "override_reasons", value=[])),
        "card.override_reasons must list the reasons a clinician may give",
    ),
    "unknown fact type": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "1", "fact", value="on_xyz")),
        "unknown fact type 'on_xyz'",
    ),
    "negation over a derived fact": (
        lambda p: _rule(p, VIT_D, _set("match", "none", "0", value={"fact": "on_ai"})),
        "negation only over base",
    ),
    "unknown operator": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "2", "where", "value", value={"below": 20})),
        "unknown operator 'below'",
    ),
    "null operand": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "2", "where", "value", value={"ne": None})),
        "ne needs a number, a string, a boolean or {threshold: name}, not None",
    ),
    "bare list": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "0", "where", "sex", value=["male", "female"])),
        "eq needs a number, a string, a boolean",
    ),
    "exists needs a boolean": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "2", "where", "value", value={"exists": "yes"})),
        "exists needs true or false, not 'yes'",
    ),
    "string compared by order": (
        lambda p: _rule(
            p, LOW_E2, _set("card", "indicator_when", "0", "where", value={"lab.value": {"lt": "ten"}})
        ),
        "indicator_when: lt on match.lab.value needs a number or a threshold",
    ),
    "for_each operand": (
        lambda p: _rule(
            p, LOW_E2, _set("card", "suggestions", "0", "for_each", "where", value={"draft": {"in": []}})
        ),
        "for_each: 'in' on ai.draft needs a non-empty list",
    ),
    "needs in": (
        lambda p: _rule(p, LOW_E2, _set("needs", "0", "in", value="male")),
        "needs: 'in' on patient.sex needs a non-empty list",
    ),
    "file name": (
        lambda p: (p / "rules" / f"{VIT_D}.yaml").rename(p / "rules" / "vitd.yaml"),
        "file name should be",
    ),
    "missing field": (lambda p: _rule(p, LOW_E2, lambda d: d.pop("when")), "missing field 'when'"),
    "unknown field": (
        lambda p: _rule(p, LOW_E2, _set("threshold", value=["x"])),
        "unknown field(s) threshold",
    ),
    "unknown alias in text": (
        lambda p: _rule(p, VIT_D, _set("card", "summary", value="On {med.ingredient}")),
        "no condition is named 'med'",
    ),
    "supersedes unknown": (
        lambda p: _rule(p, VIT_D, _set("card", "supersedes", value=["ghost-rule"])),
        "supersedes 'ghost-rule'",
    ),
    "duplicate id": (
        lambda p: shutil.copy(p / "rules" / f"{VIT_D}.yaml", p / "rules" / "zz-copy.yaml"),
        "duplicate rule id",
    ),
    "bad status": (lambda p: _rule(p, LOW_E2, _set("status", value="live")), "status 'live'"),
    "bad kind": (lambda p: _rule(p, LOW_E2, _set("kind", value="alert")), "kind 'alert'"),
    "bad indicator": (
        lambda p: _rule(p, LOW_E2, _set("card", "indicator", value="hard-stop")),
        "card.indicator",
    ),
    "threshold without source": (
        lambda p: _edit(
            p / "thresholds.yaml", lambda d: d["thresholds"]["estradiol_low_pg_ml"].pop("source")
        ),
        "estradiol_low_pg_ml needs a numeric value, a unit and a source",
    ),
    "LOINC code with a wrong check digit": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["ctx"].update(loinc=["41171-2"])),
        "labs.ctx '41171-2' is not a LOINC code (its check digit does not match)",
    ),
    "update without its order": (
        lambda p: _rule(
            p, LOW_E2, _set("card", "suggestions", "0", "actions", "0", "resource_from", value="x")
        ),
        "resource_from",
    ),
    "unknown transform": (
        lambda p: _rule(
            p, LOW_E2, _set("card", "suggestions", "0", "actions", "0", "transform", value="triple")
        ),
        "unknown transform 'triple'",
    ),
    "malformed needs": (
        lambda p: _rule(p, LOW_E2, _set("needs", value=[{"fact": "patient"}])),
        "needs entry",
    ),
    "derive from unknown alias": (
        lambda p: _edit(
            p / "rules" / "on-aromatase-inhibitor.yaml", _set("derive", "copy", "x", value="zz.ref")
        ),
        "derive.copy.x",
    ),
    "yaml syntax": (lambda p: (p / "rules" / f"{VIT_D}.yaml").write_text("id: [unclosed\n"), "cannot read"),
    "prefer naming no alias": (
        lambda p: _rule(p, LOW_E2, _set("card", "prefer", value={"scan.site": "hip"})),
        "card.prefer tests 'scan.site', but no condition is named that",
    ),
    "prefer not a mapping": (
        lambda p: _rule(p, LOW_E2, _set("card", "prefer", value=["ai"])),
        "card.prefer must be a where mapping",
    ),
    "ingredient for a sex that is no sex": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["medications"]["bone_protective"]["ingredients"][
            "raloxifene"].update(only_for_sex="men")),
        "medications.bone_protective.raloxifene.only_for_sex must list patient sexes",
    ),
    "lab without canonical unit": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["estradiol"]["units"].pop("pg/mL")),
        "labs.estradiol needs LOINC codes and units",
    ),
    "lab without a prefetch key": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["ctx"].pop("prefetch")),
        "labs.ctx.prefetch must name the prefetch key that asks for it",
    ),
    "lab correction naming an unknown threshold": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["calcium"]["corrected_for"].update(
            coefficient="payne_coefficient")),
        "labs.calcium.corrected_for.coefficient must name a threshold in thresholds.yaml, "
        "got 'payne_coefficient'",
    ),
    "lab correction with an unknown analyte": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["calcium"]["corrected_for"].update(
            analyte="protein")),
        "labs.calcium.corrected_for.analyte must name a lab analyte, got 'protein'",
    ),
    "lab correction without a source": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["calcium"]["corrected_for"].pop("source")),
        "labs.calcium.corrected_for needs a source",
    ),
    "lab correction not a mapping": (
        lambda p: _edit(p / "valuesets.yaml", lambda d: d["labs"]["calcium"].update(corrected_for="payne")),
        "labs.calcium.corrected_for must be a mapping",
    ),
    "bare threshold": (
        lambda p: _edit(p / "thresholds.yaml", _set("thresholds", "dxa_t_score_drop", value=0.3)),
        "dxa_t_score_drop needs a numeric value, a unit and a source",
    ),
    "match not a mapping": (lambda p: _rule(p, LOW_E2, _set("match", value="patient is male")), "match.all"),
    "condition not a mapping": (
        lambda p: _rule(p, LOW_E2, _set("match", "all", "0", value="patient")),
        "not a mapping",
    ),
    "card not a mapping": (lambda p: _rule(p, VIT_D, _set("card", value="say something")), "card.summary"),
    "suggestions not a list": (
        lambda p: _rule(p, VIT_D, _set("card", "suggestions", value=7)),
        "malformed rule",
    ),
    "empty any_of": (
        lambda p: _edit(
            p / "rules" / "falling-bone-density.yaml", _set("match", "all", "1", "any_of", value=[])
        ),
        "any_of must be",
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_check_catches(kind, tmp_path, capsys):
    pack = _copy_pack(tmp_path)
    breaker, message = BROKEN[kind]
    breaker(pack)
    with pytest.raises(RulePackError) as caught:
        rulepack.load(pack)
    everything = " | ".join([caught.value.message, *caught.value.details])
    assert message in everything
    assert main(["rules", "check", str(pack)]) == 2
    assert message in capsys.readouterr().err


def test_copied_pack_is_clean(tmp_path):
    assert rulepack.load(_copy_pack(tmp_path)).version == "0.6.0"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"no_such_threshold": 3}, "unknown threshold 'no_such_threshold'"),
        ({"estradiol_low_pg_ml": "twenty"}, "must be a number"),
    ],
)
def test_site_config_errors(tmp_path, override, message):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"thresholds": override}))
    with pytest.raises(RulePackError) as caught:
        rulepack.load(None, site)
    assert message in " ".join(caught.value.details)

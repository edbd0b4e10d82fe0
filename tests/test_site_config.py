"""Site overrides (CDS_SITE_CONFIG): changing a threshold moves the boundary, for the HTTP service too."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from support import make_test_app

from cds.hooks.services import prefetch_templates
from cds.toolkit.offline import hook_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def rules_for(app, fixture: str) -> dict[str, str]:
    app.config["NOW"] = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    bundle = json.loads((FIXTURES / fixture).read_text())
    body = hook_request(bundle, "order-sign", templates=prefetch_templates(app.extensions["cds.pack"]))
    response = app.test_client().post("/cds-services/bone-health-order-sign", json=body)
    assert response.status_code == 200
    return {c["source"]["topic"]["code"]: c["indicator"] for c in response.get_json()["cards"]}


def site_app(tmp_path: Path, thresholds: dict) -> object:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"thresholds": thresholds}))
    return make_test_app({"TESTING": True, "SITE_CONFIG": str(path)})


@pytest.mark.parametrize(
    "fixture, rule, site, default_indicator, site_indicator",
    [
        # 19.9 pg/mL is low by default (< 20); a site using 19.5 pg/mL says nothing
        (
            "low-estradiol-on-ai/in-19.9-pg-ml-warning.json",
            "low-estradiol-on-ai",
            {"estradiol_low_pg_ml": 19.5},
            "warning",
            None,
        ),
        # 20.0 pg/mL is not low by default; a site using 25 pg/mL warns
        (
            "low-estradiol-on-ai/out-20.0-pg-ml.json",
            "low-estradiol-on-ai",
            {"estradiol_low_pg_ml": 25},
            None,
            "warning",
        ),
        # 20 ng/mL vitamin D is insufficient (info) by default; a site following 2024 guidance disables it
        (
            "vitamin-d-low/in-20.0-ng-ml-insufficient.json",
            "vitamin-d-low",
            {"vitamin_d_insufficient_ng_ml": 20},
            "info",
            None,
        ),
        # a 2.9 % BMD fall is below the default LSC; a site with a 2.5 % LSC warns
        (
            "falling-bone-density/out-bmd-percent-2.9.json",
            "falling-bone-density",
            {"dxa_bmd_drop_percent": 2.5},
            None,
            "warning",
        ),
        # DXA 731 days old is overdue by default; a site with a 3-year interval says nothing
        ("dxa-overdue/in-731-days.json", "dxa-overdue", {"dxa_interval_days": 1095}, "info", None),
    ],
)
def test_site_threshold_moves_the_boundary(tmp_path, fixture, rule, site, default_indicator, site_indicator):
    default = rules_for(make_test_app({"TESTING": True}), fixture)
    changed = rules_for(site_app(tmp_path, site), fixture)
    assert default.get(rule) == default_indicator
    assert changed.get(rule) == site_indicator


def test_site_override_is_in_the_pack_hash_and_card_text(tmp_path):
    default = make_test_app({"TESTING": True})
    site = site_app(tmp_path, {"vitamin_d_interval_days": 200})
    assert default.extensions["cds.pack"].content_hash != site.extensions["cds.pack"].content_hash
    assert site.extensions["cds.pack"].thresholds["vitamin_d_interval_days"]["site_override"] is True
    site.config["NOW"] = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    body = hook_request(
        json.loads((FIXTURES / "vitamin-d-missing/in-no-result.json").read_text()), "order-sign"
    )
    cards = site.test_client().post("/cds-services/bone-health-order-sign", json=body).get_json()["cards"]
    assert "last 200 days" in cards[0]["summary"]


def test_every_threshold_is_documented():
    from cds.rules import pack as rulepack

    text = (Path(__file__).resolve().parent.parent / "docs" / "site-config.md").read_text(encoding="utf-8")
    for name, spec in rulepack.load().thresholds.items():
        assert f"| `{name}` | {spec['value']:g} |" in text, f"{name} missing or stale in docs/site-config.md"


def test_ionized_calcium_stands_in_only_with_the_sites_own_lower_limit(tmp_path):
    """The pack has no ionized-calcium cut-off of its own: a site that lets ionized calcium stand in for total
    calcium must give its laboratory's lower limit, or the pack refuses to load (so the service does not
    start)."""
    from cds.errors import RulePackError
    from cds.rules import pack as rulepack

    assert rulepack.load().threshold("ionized_calcium_low_mmol_l") == 0
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"thresholds": {"ionized_calcium_substitutes": 1}}))
    with pytest.raises(RulePackError) as refused:
        rulepack.load(site_config=path)
    assert ("ionized_calcium_substitutes is set to 1, so ionized_calcium_low_mmol_l must be set too"
            in " ".join(refused.value.details))
    path.write_text(yaml.safe_dump({"thresholds": {"ionized_calcium_substitutes": 1,
                                                   "ionized_calcium_low_mmol_l": 1.15}}))
    assert rulepack.load(site_config=path).threshold("ionized_calcium_low_mmol_l") == 1.15

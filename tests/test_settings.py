from __future__ import annotations

import pytest

from cds import create_app, settings
from cds.errors import ConfigurationError, RulePackError


def test_environment_then_overrides():
    values = settings.load({"PORT": 7000}, environ={"CDS_PORT": "6000", "CDS_MAX_JSON_DEPTH": "10"})
    assert values["PORT"] == 7000
    assert values["MAX_JSON_DEPTH"] == 10


def test_bad_value_names_the_setting():
    with pytest.raises(ConfigurationError, match="CDS_PORT"):
        settings.load(environ={"CDS_PORT": "many"})


def test_site_config_overrides_a_threshold(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("thresholds:\n  estradiol_low_pg_ml: 15\n")
    app = create_app({"SITE_CONFIG": str(site), "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    assert app.extensions["cds.pack"].threshold("estradiol_low_pg_ml") == 15


def test_site_config_with_unknown_threshold_fails_at_start(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("thresholds:\n  estradiol_lo: 15\n")
    with pytest.raises(RulePackError) as info:
        create_app({"SITE_CONFIG": str(site), "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    assert any("estradiol_lo" in d for d in info.value.details)

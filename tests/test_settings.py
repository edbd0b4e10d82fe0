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


# --- the typed model: every declared setting checked at start-up, refused in one line naming it ---------

import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cds.cli import main  # noqa: E402
from cds.settings import SETTINGS, Setting  # noqa: E402
from cds.settings_model import _bool, _csv, _float, _int, _str  # noqa: E402

#: tried on a setting whose parser is its own: at least one must be refused
OTHER_CANDIDATES = ["", "\x00", "not a value", "-1", "1e999", "{}"]


def invalid_values(setting: Setting) -> list[str]:
    """Values the declaration says the setting does not accept (as they would come from the environment)."""
    if setting.choices:
        return ["neither-of-these", ""]
    if setting.parse is _bool:
        return ["maybe", "2", "truthy"]
    if setting.parse in (_int, _float):
        step = 1 if setting.parse is _int else 0.5
        out = ["many", "12abc"] + (["1.5"] if setting.parse is _int else ["nan", "inf", "-inf"])
        if setting.ge is not None:
            out.append(str(type(step)(setting.ge) - step))
        if setting.gt is not None:
            out.append(str(type(step)(setting.gt)))
        if setting.le is not None:
            out.append(str(type(step)(setting.le) + step))
        return out
    if setting.parse in (_str, _csv):
        out = ["two\nlines", "tab\there", "bell\x07", "nul\x00"]
        if setting.min_length and setting.min_length > 1:
            out.append("x" * (setting.min_length - 1))
        elif setting.min_length == 1:
            out.append("")
        return out
    return []


def _assert_one_line_naming(message: str, setting: Setting, raw: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert setting.env in message and setting.accepts in message, message
    if setting.secret and len(raw) > 2:
        assert raw not in message and repr(raw)[1:-1] not in message, message


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_refuses_an_invalid_value_in_one_line_naming_it(setting):
    candidates = invalid_values(setting)
    if not candidates:  # a parser of its own: some value must still be refused
        refused = []
        for raw in OTHER_CANDIDATES:
            try:
                settings.load(environ={setting.env: raw})
            except ConfigurationError as exc:
                refused.append(raw)
                _assert_one_line_naming(exc.message, setting, raw)
        assert refused, f"{setting.env} accepts every value tried: declare what it accepts"
        return
    for raw in candidates:
        with pytest.raises(ConfigurationError) as from_env:
            settings.load(environ={setting.env: raw})
        _assert_one_line_naming(from_env.value.message, setting, raw)
        assert "from the environment" in from_env.value.message
        with pytest.raises(ConfigurationError) as from_config:
            settings.load({setting.name: raw}, environ={})
        _assert_one_line_naming(from_config.value.message, setting, raw)
        assert f"config[{setting.name!r}]" in from_config.value.message


def _refused(setting: Setting, raw: str) -> bool:
    try:
        settings.load(environ={setting.env: raw})
    except ConfigurationError:
        return True
    return False


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_the_command_line_refuses_an_invalid_setting_in_one_line(setting, monkeypatch, capsys):
    raw = next(v for v in invalid_values(setting) or OTHER_CANDIDATES
               if "\x00" not in v and _refused(setting, v))  # an environment cannot hold a NUL
    monkeypatch.setenv(setting.env, raw)
    status = main(["rules", "check"])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cds: error: setting {setting.env}"), err
    _assert_one_line_naming(lines[0], setting, raw)


def test_create_app_refuses_an_invalid_setting_with_the_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        create_app({"CALL_MAX_RESOURCES": -5, "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    assert info.value.message == ("setting CDS_CALL_MAX_RESOURCES='-5' from config['CALL_MAX_RESOURCES'] is "
                                  "refused: it accepts a whole number of at least 0")


def test_cds_serve_refuses_an_out_of_range_setting_in_one_line(tmp_path):
    import os

    env = {**os.environ, "CDS_CALL_MAX_RESOURCES": "-5"}
    done = subprocess.run([sys.executable, "-m", "cds", "serve", "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("cds: error: setting CDS_CALL_MAX_RESOURCES='-5' from the environment is "
                                   "refused: it accepts a whole number of at least 0")


def test_every_default_is_accepted():
    values = settings.load(environ={})
    assert {s.name: values[s.name] for s in SETTINGS} == {
        s.name: (_csv(s.default) if s.parse is _csv else s.default) for s in SETTINGS}


@hypothesis_settings(max_examples=400, deadline=None)
@given(setting=st.sampled_from(SETTINGS), raw=st.text(max_size=40))
def test_any_text_for_any_setting_is_taken_or_refused_in_one_line(setting, raw):
    """Whatever text a variable holds, start-up either takes it or says, in one line, which setting refused
    it and what it accepts; never another exception, never a secret repeated."""
    try:
        value = settings.load(environ={setting.env: raw})[setting.name]
    except ConfigurationError as exc:
        _assert_one_line_naming(exc.message, setting, raw)
        return
    if setting.parse in (_str,) and not setting.choices:
        assert value == raw
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert setting.ge is None or value >= setting.ge
        assert setting.gt is None or value > setting.gt
        assert setting.le is None or value <= setting.le


INT_SETTINGS = [s for s in SETTINGS if s.parse is _int]


@hypothesis_settings(max_examples=300, deadline=None)
@given(setting=st.sampled_from(INT_SETTINGS), number=st.integers(min_value=-10**12, max_value=10**12))
def test_a_whole_number_is_taken_exactly_when_it_is_in_range(setting, number):
    inside = ((setting.ge is None or number >= setting.ge) and (setting.gt is None or number > setting.gt)
              and (setting.le is None or number <= setting.le))
    try:
        value = settings.load(environ={setting.env: str(number)})[setting.name]
    except ConfigurationError as exc:
        assert not inside, exc.message
        assert setting.env in exc.message
        return
    assert inside and value == number


def test_choices_are_matched_whatever_their_case():
    assert settings.load(environ={"CDS_LOG_LEVEL": "debug", "CDS_REPLAY_FALLBACK": "HOST"})["LOG_LEVEL"] \
        == "DEBUG"
    assert settings.load(environ={"CDS_REPLAY_FALLBACK": "HOST"})["REPLAY_FALLBACK"] == "host"


def test_an_unknown_cds_variable_is_named_in_a_warning_and_start_up_goes_on(caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="cds.settings")
    values = settings.load(environ={"CDS_LINK_SECRT": "x" * 20, "CDS_PORTT": "1", "CDS_PYTHON": "python3",
                                    "CDS_TEST_POSTGRES_URL": "postgresql://", "OTHER": "1"})
    assert values["LINK_SECRET"] == "" and values["PORT"] == 5000
    said = [r.getMessage() for r in caplog.records if r.name == "cds.settings"]
    assert any("CDS_LINK_SECRT" in m and "did you mean CDS_LINK_SECRET?" in m for m in said), said
    assert any("CDS_PORTT" in m and "CDS_PORT?" in m for m in said), said
    assert not any("CDS_PYTHON" in m or "CDS_TEST_" in m or "OTHER" in m for m in said), said


def test_precedence_default_then_secrets_folder_then_environment_then_mapping(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "CDS_SOURCE_LABEL").write_text("from the folder\n")
    (folder / "CDS_LINK_SECRET").write_text("link-secret-from-a-file-0123456789\n")
    base = {"CDS_SECRETS_DIR": str(folder)}
    assert settings.load(environ={})["SOURCE_LABEL"] == "Bone Health CDS"
    values = settings.load(environ=base)
    assert values["SOURCE_LABEL"] == "from the folder"
    assert values["LINK_SECRET"] == "link-secret-from-a-file-0123456789"
    assert settings.load(environ={**base, "CDS_SOURCE_LABEL": "env"})["SOURCE_LABEL"] == "env"
    assert settings.load({"SOURCE_LABEL": "map"}, environ={**base, "CDS_SOURCE_LABEL": "env"})[
        "SOURCE_LABEL"] == "map"


@pytest.mark.parametrize("content", ["", "\n", "   \n", "fifteen-chars!!"])
def test_a_short_or_empty_secret_in_the_secrets_folder_is_refused(tmp_path, content):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "CDS_LINK_SECRET").write_text(content)
    with pytest.raises(ConfigurationError) as info:
        settings.load(environ={"CDS_SECRETS_DIR": str(folder)})
    message = info.value.message
    assert "CDS_LINK_SECRET" in message and str(folder / "CDS_LINK_SECRET") in message
    assert "at least 16 characters" in message and "\n" not in message


def test_a_secrets_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="CDS_SECRETS_DIR"):
        settings.load(environ={"CDS_SECRETS_DIR": str(tmp_path / "nowhere")})


def _pair(raw: str) -> tuple[int, int]:
    """Two whole numbers, as `A:B`."""
    first, second = str(raw).split(":")
    return int(first), int(second)


def test_a_declaration_in_the_plain_form_is_typed_and_checked():
    """``Setting(name, default, help, parser)``, with no constraint declared, still gets its type checked
    (a parser of its own: whatever it raises is a refusal), a ``None`` default included."""
    from cds.settings_model import read

    plain = (Setting("P_INT", 3, "h", _int), Setting("P_FLOAT", 1.5, "h", _float),
             Setting("P_BOOL", False, "h", _bool), Setting("P_LIST", (), "h", _csv),
             Setting("P_TEXT", "", "h"), Setting("P_OWN", "1:2", "h", _pair),
             Setting("P_NONE", None, "h", _int))
    assert read(plain, {}, {}, "") == {"P_INT": 3, "P_FLOAT": 1.5, "P_BOOL": False, "P_LIST": (),
                                       "P_TEXT": "", "P_OWN": (1, 2), "P_NONE": None}
    given = {"CDS_P_INT": "4", "CDS_P_FLOAT": "2", "CDS_P_BOOL": "yes", "CDS_P_LIST": "a, b",
             "CDS_P_TEXT": "t", "CDS_P_OWN": "5:6", "CDS_P_NONE": "7"}
    assert read(plain, {}, given, "") == {"P_INT": 4, "P_FLOAT": 2.0, "P_BOOL": True, "P_LIST": ("a", "b"),
                                          "P_TEXT": "t", "P_OWN": (5, 6), "P_NONE": 7}
    for name, raw, accepts in [("P_INT", "x", "a whole number"), ("P_OWN", "1:2:3", "two whole numbers, as"),
                               ("P_OWN", "a:b", "two whole numbers"), ("P_BOOL", "perhaps", "true or false")]:
        with pytest.raises(ConfigurationError) as info:
            read(plain, {}, {f"CDS_{name}": raw}, "")
        assert f"CDS_{name}" in info.value.message and accepts in info.value.message

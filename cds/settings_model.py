"""The settings' typed model: every declaration in ``cds/settings.py`` becomes a pydantic-settings field.

A setting is declared once with ``Setting(name, default, help, parse)`` (``cds/settings_declare.py``); the
optional ``ge``, ``gt``, ``le``, ``choices``, ``min_length`` and ``secret`` say which values it accepts.
``model_for`` turns the declarations
into a ``BaseSettings`` class (types, ranges and enumerations checked by pydantic), and ``read`` reads it:
the defaults, then a file per setting in ``CDS_SECRETS_DIR``, then the ``CDS_*`` environment, then the
mapping given. A refused value is one ``ConfigurationError`` line naming the variable, where its value came
from and what it accepts (a secret's value is never repeated). An unknown ``CDS_`` variable is named in a
warning with the declared name closest to it (``warn_unknown``): a typo shows, and the service still starts.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource, PydanticBaseSettingsSource

from cds.errors import ConfigurationError
from cds.settings_declare import PREFIX, Setting, _bool, _csv, _float, _folder, _int, _is_folder, _str


def _no_control_characters(value: Any) -> Any:
    texts = value if isinstance(value, tuple) else (value,)
    if any(isinstance(t, str) and any(unicodedata.category(c) == "Cc" for c in t) for t in texts):
        raise ValueError("control characters")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        for choice in choices:  # case does not matter; the value is the declared spelling
            if str(value).strip().lower() == choice.lower():
                return choice
        raise ValueError("not one of the choices")

    return check


def _min_length(length: int, empty_ok: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) < length and not (empty_ok and value == ""):
            raise ValueError(f"shorter than {length} characters")
        return value

    return check


def _refusing(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse`` with any error it raises on a value turned into a refusal (pydantic reports ValueError)."""
    def run(raw: Any) -> Any:
        try:
            return parse(raw)
        except (TypeError, ArithmeticError, LookupError, OSError) as exc:
            raise ValueError(str(exc)) from exc

    return run


def _field(setting: Setting) -> tuple[Any, Any]:
    """The pydantic type and default of one declaration (a ``None`` default: the setting may be None)."""
    parse = setting.parse
    metadata: list[Any] = []
    if parse is _int:
        kind: Any = int
    elif parse is _float:
        kind = float
        metadata.append(Field(allow_inf_nan=False))
    elif parse is _bool:
        kind = bool
        metadata.append(BeforeValidator(_refusing(_bool)))
    elif parse is _csv:
        kind = tuple[str, ...]
        metadata += [NoDecode, BeforeValidator(_refusing(_csv))]
    else:  # _str, or a parser of its own: its result is taken as it is
        kind = str if parse in (_str, _folder) else Any
        metadata.append(BeforeValidator(_refusing(parse)))
    if setting.ge is not None:
        metadata.append(Field(ge=setting.ge))
    if setting.gt is not None:
        metadata.append(Field(gt=setting.gt))
    if setting.le is not None:
        metadata.append(Field(le=setting.le))
    if setting.choices:
        metadata.append(AfterValidator(_one_of(setting.choices)))
    if setting.min_length:
        metadata.append(AfterValidator(_min_length(setting.min_length, setting.default in ("", ()))))
    metadata.append(AfterValidator(_no_control_characters))
    annotated: Any = Annotated[kind, *metadata]
    return (annotated | None if setting.default is None else annotated), setting.default


class _Environment(EnvSettingsSource):
    """The ``CDS_*`` variables of a given mapping (``os.environ`` unless ``load`` is given another)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._environ.items() if k.startswith(PREFIX)}


class _Model(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, case_sensitive=True, extra="ignore",
                                      validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = getattr(_READING, "environ", None)
        return init_settings, _Environment(settings_cls, os.environ if environ is None else environ), \
            file_secret_settings


_READING = threading.local()  # the environment the current thread's ``read`` was given


@cache
def model_for(declarations: tuple[Setting, ...]) -> type[BaseSettings]:
    """The pydantic-settings class of these declarations (one field per setting)."""
    fields: dict[str, Any] = {s.name: _field(s) for s in declarations}
    return create_model("Settings", __base__=_Model, **fields)


def _source(setting: Setting, overrides: Mapping[str, Any], environ: Mapping[str, str],
            secrets_dir: str) -> str:
    if setting.name in overrides:
        return f"config[{setting.name!r}]"
    if setting.env in environ:
        return "the environment"
    if secrets_dir and (Path(secrets_dir) / setting.env).is_file():
        return f"the file {Path(secrets_dir) / setting.env}"
    return "its default"


def _refusal(setting: Setting, source: str, raw: Any) -> str:
    shown = "" if setting.secret or raw is None else f"={str(raw)[:60]!r}"
    return f"setting {setting.env}{shown} from {source} is refused: it accepts {setting.accepts}"


def read(declarations: tuple[Setting, ...], overrides: Mapping[str, Any], environ: Mapping[str, str],
         secrets_dir: str) -> dict[str, Any]:
    """Every declared setting's value, checked; ``ConfigurationError`` (one line) for the first refused."""
    by_name = {s.name: s for s in declarations}
    given = {k: v for k, v in overrides.items() if k in by_name and v is not None}
    secrets_dir = secrets_dir if _is_folder(secrets_dir) else ""  # else refused with the other settings
    model = model_for(declarations)
    _READING.environ = environ
    try:
        values = model(_secrets_dir=secrets_dir or None, **given).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        setting = by_name[str(error["loc"][0])]
        raw = given.get(setting.name, environ.get(setting.env, error.get("input")))  # as it was given
        raise ConfigurationError(_refusal(setting, _source(setting, given, environ, secrets_dir), raw)) \
            from None
    finally:
        _READING.environ = None
    for setting in declarations:  # a file in the secrets folder is never empty ("not set" is no file)
        source = _source(setting, given, environ, secrets_dir)
        if source.startswith("the file") and values[setting.name] in ("", ()):
            raise ConfigurationError(_refusal(setting, source, None))
    return values

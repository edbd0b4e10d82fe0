"""The settings' typed model: every declaration in ``cds/settings.py`` becomes a pydantic-settings field.

``Setting(name, default, help, parse)`` declares a setting once; the optional ``ge``, ``gt``, ``le``,
``choices``, ``min_length`` and ``secret`` say which values it accepts. ``model_for`` turns the declarations
into a ``BaseSettings`` class (types, ranges and enumerations checked by pydantic), and ``read`` reads it:
the defaults, then a file per setting in ``CDS_SECRETS_DIR``, then the ``CDS_*`` environment, then the
mapping given. A refused value is one ``ConfigurationError`` line naming the variable, where its value came
from and what it accepts (a secret's value is never repeated). An unknown ``CDS_`` variable is named in a
warning with the declared name closest to it: a typo shows, and the service still starts.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource, PydanticBaseSettingsSource

from cds.errors import ConfigurationError

log = logging.getLogger("cds.settings")

PREFIX = "CDS_"
#: ``CDS_`` variables that are not settings: the interpreter and venv ``run.sh`` uses, the test and
#: benchmark harnesses' own.
NOT_SETTINGS = ("CDS_PYTHON", "CDS_VENV")
NOT_SETTINGS_PREFIXES = ("CDS_TEST_", "CDS_BENCH_")


def _bool(raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _int(raw: str | int) -> int:
    return int(raw)


def _float(raw: str | float) -> float:
    return float(raw)


def _str(raw: Any) -> str:
    return str(raw)


def _folder(raw: Any) -> str:
    """A folder that exists (or empty)."""
    value = str(raw)
    if value and not _is_folder(value):
        raise ValueError("no such folder")
    return value


def _is_folder(path: str) -> bool:
    try:
        return bool(path) and Path(path).is_dir()
    except (OSError, ValueError):  # a name the system cannot take (a NUL in it, too long)
        return False


def _csv(raw: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(x) for x in raw)
    return tuple(part.strip() for part in str(raw).split(",") if part.strip())


@dataclass(frozen=True)
class Setting:
    """One setting: its name (the variable is ``CDS_<name>``), default, one line of help, parser, and the
    values it accepts. A setting whose default is empty may be left empty (it means "not set")."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = _str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    min_length: int | None = None
    secret: bool = False  # never repeated in a message

    @property
    def env(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def accepts(self) -> str:
        """What the setting accepts, in words (the end of its one-line error)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kinds: dict[Callable[[Any], Any], str] = {
            _int: "a whole number", _float: "a number", _bool: "true or false (or 1/0, yes/no, on/off)",
            _csv: "a comma-separated list", _str: "text"}
        kind = kinds.get(self.parse)
        if kind is None:  # a parser of its own: the first line of its docstring says what it takes
            line = ((self.parse.__doc__ or "").strip().splitlines() or ["a value"])[0].rstrip(".")
            kind = line[:1].lower() + line[1:]
        if self.ge is not None and self.le is not None:
            kind += f" from {self.ge:g} to {self.le:g}"
        elif self.ge is not None:
            kind += f" of at least {self.ge:g}"
        elif self.gt is not None:
            kind += f" greater than {self.gt:g}"
            kind += f" and at most {self.le:g}" if self.le is not None else ""
        elif self.le is not None:
            kind += f" of at most {self.le:g}"
        if self.min_length == 1:
            kind = "non-empty " + kind
        elif self.min_length:
            kind += f" of at least {self.min_length} characters"
        if self.parse in (_str, _csv):
            kind += " without control characters"
        if self.min_length and self.default in ("", ()):
            kind += " (or empty: not set)"
        return kind


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


def warn_unknown(declarations: tuple[Setting, ...], environ: Mapping[str, str], said: set[str]) -> None:
    """Name each ``CDS_`` variable that is no setting, once per process, with the closest setting."""
    known = {s.env for s in declarations}
    for name in sorted(environ):
        if (not name.startswith(PREFIX) or name in known or name in NOT_SETTINGS or name in said
                or name.startswith(NOT_SETTINGS_PREFIXES)):
            continue
        said.add(name)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("%s is not a setting and is ignored%s; see docs/configuration.md", name, hint)


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

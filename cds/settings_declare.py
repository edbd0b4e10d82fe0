"""How a setting is declared: ``Setting(name, default, help, parse)``, the parsers a declaration names, and
the warning naming a ``CDS_`` variable that is no setting.

Standard library only: the declarations in ``cds/settings.py`` and the defaults read from them
(``cds.settings.default``, which the decision core reads) load without pydantic. The typed model that checks
the values at start-up is ``cds/settings_model.py``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

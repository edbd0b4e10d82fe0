"""Moving every date in a FHIR resource tree by a whole number of days. Pure code.

Fixtures are written for one evaluation date (``at`` in their sidecar); a live server evaluates at its own
"now". Shifting every date of the record by ``server_today - at`` keeps each boundary where the fixture
put it: a result 365 days old on ``at`` is 365 days old on any day.

A string is shifted when its key names a date (``birthDate``, ``effectiveDateTime``, ``issued``,
``authoredOn``, a Period's ``start``/``end``, anything ending in ``Date``, ``DateTime`` or ``Instant``...)
and its value has a FHIR date, dateTime or instant form. The precision is kept: ``"1960"`` stays a year,
``"2026-03"`` a month, and a time of day and its zone are left as they were. Codes and ids are never
touched, even when they look like numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

DATE_KEYS = frozenset(
    {
        "issued",
        "authoredOn",
        "start",
        "end",
        "date",
        "recorded",
        "lastUpdated",
        "timestamp",
        "occurrenceDateTime",
        "whenHandedOver",
        "whenPrepared",
        "created",
        "sent",
        "received",
        "outcomeTimestamp",
    }
)
DATE_SUFFIXES = ("Date", "DateTime", "Instant")
FHIR_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")


def is_date_key(key: str) -> bool:
    return key in DATE_KEYS or key.endswith(DATE_SUFFIXES)


def shift_value(value: str, days: int) -> str:
    """``value`` (a FHIR date/dateTime/instant) moved by ``days``; anything else is returned unchanged."""
    match = FHIR_DATE.match(value)
    if not match or days == 0:
        return value
    year, month, day, time = match.groups()
    try:
        moved = dt.date(int(year), int(month or 1), int(day or 1)) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return value
    if month is None:
        return f"{moved.year:04d}"
    if day is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + (time or "")


def shift_dates(data: Any, days: int) -> Any:
    """A copy of ``data`` (any JSON) with every date moved by ``days`` (see the module docstring)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if isinstance(value, str) and is_date_key(key):
                out[key] = shift_value(value, days)
            else:
                out[key] = shift_dates(value, days)
        return out
    if isinstance(data, list):
        return [shift_dates(item, days) for item in data]
    return data


def days_between(at: dt.date, today: dt.date) -> int:
    """The shift that moves a fixture written for ``at`` to ``today``."""
    return (today - at).days

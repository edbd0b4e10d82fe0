"""What every part of the fixture catalogue writes its fixtures with: ``card`` (an expected card) and ``fix``
(one fixture). ``scripts/fixtures_catalogue.py`` and each of its parts (``fixtures_dxa.py``,
``fixtures_values.py``, ``fixtures_newrules.py``, ``fixtures_ai_course.py``, ``fixtures_underway.py``)
import them from here; ``b`` is ``scripts/build_fixtures.py``.
"""

from __future__ import annotations

from typing import Any


def card(rule: str, indicator: str, summary: str = "", **extra: Any) -> tuple:
    return (rule, indicator, summary, extra) if extra else (rule, indicator, summary)


def fix(
    b: Any, rule: str, name: str, resources: list, cards: list = (), not_cards: list = (), **kw: Any
) -> None:
    extra = {}
    for c in cards:
        if len(c) > 3:
            extra[c[0]] = c[3]
    b.fixture(rule, name, resources, cards=[c[:3] for c in cards], not_cards=not_cards, **kw)
    if extra:  # fold the extra checks into the expected card entries
        expected = b.FIXTURES[-1][3]
        for item in expected["cards"]:
            item.update(extra.get(item["rule"], {}))

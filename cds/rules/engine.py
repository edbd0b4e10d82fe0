"""The rules-engine adapter: the only module that imports durable-rules.

durable-rules hazards handled here (each has a test in ``tests/test_engine.py``):

* The engine is not thread-safe: one process-wide lock serialises every use of it.
* At most 1,024 live sessions per ruleset, and session ids are hashed to 32 bits so two live sessions can
  share state: each evaluation gets a fresh session id, only one session is ever alive (under the lock),
  and its state is deleted in a ``finally``.
* An exception raised inside a rule action is swallowed into the session state: the state is checked
  after every assertion and an ``EngineError`` raised.
* Asserting a fact that no rule pattern mentions raises ``MessageNotHandledException``: that means
  "no match" and is not an error. Re-asserting an identical fact raises ``MessageObservedException``:
  that means "already known" and is not an error either. Both hold for facts derived inside an action
  too (two matches deriving the same fact; a derived fact only the audit reads).
* The engine's JSON parser fails on floats in exponent notation (``1e-05``): floats are rounded to four
  decimals before assertion, and magnitudes of 1e15 or more are refused.
* The engine's comparisons mix kinds of value (``true`` matches ``1``, ``"1"`` matches ``1``, ``"a"`` is
  greater than ``2``): every scalar field is also asserted under a typed name (``age$num``, ``sex$str``,
  ``draft$bool``; ``cds.rules.conditions.typed_fields``), compiled conditions compare only those, and the
  typed copies are dropped again from every fact handed back.
* ``durable.engine.Host`` starts background dispatcher threads that run pending actions on their own; the
  host used here runs none, so every action runs inside ``evaluate`` under the lock.

* Deleting a session whose facts left a partial match but never ran an action crashes the process
  (segmentation fault inside ``delete_state``). A sentinel rule that fires on the ``ready`` fact alone
  guarantees every session has run an action before it is deleted.

Negation ("no vitamin D result within a year") is only sound once every base fact is present, so every
compiled rule also waits for a ``ready`` control fact, asserted after the base facts.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from durable.engine import Host, MessageNotHandledException, MessageObservedException

from cds.errors import EngineError
from cds.rules.conditions import TYPED_SUFFIXES, typed_fields

log = logging.getLogger("cds.rules.engine")

READY = {"t": "ready"}

_ENGINE_LOCK = threading.Lock()
_RULESET_COUNTER = 0


@dataclass
class Firing:
    """One activation of one rule: the facts it matched (by alias) and the fact it derived, if any."""

    rule_id: str
    matched: dict[str, dict[str, Any]]
    derived: dict[str, Any] | None = None


@dataclass
class CompiledRule:
    """A rule in durable-rules' JSON form plus a pure function turning its matched facts into a derived
    fact."""

    rule_id: str
    definition: dict[str, Any]  # {"all": [...]} without "run"
    derive: Callable[[dict[str, dict[str, Any]]], dict[str, Any] | None] | None = None


class _QuietHost(Host):
    """A host that starts no background dispatcher threads."""

    def _run(self) -> None:  # noqa: D401 - overriding the engine's thread start-up
        return None


def _number(key: str, value: float) -> float:
    # The engine's JSON parser rejects exponent notation (1e-05, 1e+20): round floats so that they print
    # in plain decimal, and refuse magnitudes that cannot.
    if not math.isfinite(value) or abs(value) >= 1e15:
        raise EngineError(f"fact field {key!r} holds {value!r}, which the rules engine cannot represent")
    return round(value, 4)  # every non-zero value left is >= 1e-4, which prints without an exponent


def _strip(fact: dict[str, Any]) -> dict[str, Any]:
    # The engine's JSON layer has no use for nulls and matching on them is undefined: drop them (a missing
    # field and a None field mean the same in the condition language). Then add the typed copies.
    kept = {k: _number(k, v) if isinstance(v, float) else v for k, v in fact.items() if v is not None}
    return {**kept, **typed_fields(kept)}


def _plain(content: Any) -> dict[str, Any]:
    data = getattr(content, "_d", content)
    return {k: v for k, v in dict(data).items()
            if k not in ("sid", "id", "$s") and not k.endswith(TYPED_SUFFIXES)}


@dataclass
class RuleEngine:
    """A compiled rule pack, ready to evaluate one patient's facts at a time."""

    rules: list[CompiledRule]
    _host: _QuietHost = field(init=False, repr=False)
    _name: str = field(init=False)
    _firings: list[Firing] | None = field(init=False, default=None, repr=False)
    _sentinel_ran: bool = field(init=False, default=False, repr=False)
    _aborting: bool = field(init=False, default=False, repr=False)

    def __post_init__(self) -> None:
        global _RULESET_COUNTER
        with _ENGINE_LOCK:
            _RULESET_COUNTER += 1
            self._name = f"pack{_RULESET_COUNTER}"
            definition: dict[str, Any] = {}
            for index, rule in enumerate(self.rules):
                gate = [{"ready$gate": {"t": "ready"}}]
                # the gate before the negations: durable-rules tests a ``$not`` when the terms before it
                # have matched, so a negation placed ahead of the gate would be decided before the base
                # facts it denies were all asserted
                terms = list(rule.definition["all"])
                positive = [t for t in terms if not any(k.endswith("$not") for k in t)]
                negated = [t for t in terms if any(k.endswith("$not") for k in t)]
                body: dict[str, Any] = {"all": positive + gate + negated}
                body["run"] = self._action(rule)
                definition[f"r{index}"] = body
            definition["sentinel"] = {"all": [{"ready$gate": {"t": "ready"}}], "run": self._sentinel}
            self._host = _QuietHost()
            try:
                self._host.register_rulesets({self._name: definition})
            except Exception as exc:  # the engine rejects the JSON it was given
                raise EngineError(f"the rule pack did not compile in the rules engine: {exc}") from exc

    def _sentinel(self, c: Any) -> None:
        """Runs once per session on the ``ready`` fact; see the module docstring (delete_state hazard)."""
        self._sentinel_ran = True

    def _action(self, rule: CompiledRule) -> Callable[[Any], None]:
        def run(c: Any) -> None:
            if self._aborting:
                return
            matched = {alias: _plain(content) for alias, content in c._m.items()
                       if alias != "ready$gate" and not alias.endswith("$not")}
            derived = rule.derive(matched) if rule.derive else None
            assert self._firings is not None
            self._firings.append(Firing(rule.rule_id, matched, derived))
            if derived is not None:
                try:
                    c.assert_fact(_strip(dict(derived)))
                except MessageNotHandledException:
                    pass  # a derived fact no rule mentions: recorded in the firing, nothing more
                except MessageObservedException:
                    pass  # the same fact was already derived by another match

        return run

    def evaluate(self, facts: Iterable[dict[str, Any]]) -> list[Firing]:
        """Assert ``facts`` into a fresh session, run every rule to quiescence, return the firings."""
        sid = uuid.uuid4().hex
        with _ENGINE_LOCK:
            self._firings, self._sentinel_ran, self._aborting = [], False, False
            try:
                for fact in [_strip({**f, "sid": sid}) for f in facts] + [{**READY, "sid": sid}]:
                    self._assert(sid, fact)
                return self._firings
            finally:
                self._end_session(sid)

    def _end_session(self, sid: str) -> None:
        """Delete the session; only once the sentinel has run (deleting earlier crashes the engine)."""
        self._firings = None
        try:
            self._host.get_state(self._name, sid)
        except Exception:  # noqa: BLE001 - no state was created: nothing to delete
            return
        if not self._sentinel_ran:
            self._aborting = True  # an evaluation that failed part-way: no further action does anything
            try:
                self._host.assert_fact(self._name, {**READY, "sid": sid})
            except Exception:  # noqa: BLE001 - whatever the engine says, the check below decides
                pass
        if self._sentinel_ran:
            self._host.delete_state(self._name, sid)
        else:
            log.error("rules engine session could not be closed safely; it is left in memory")

    def _assert(self, sid: str, fact: dict[str, Any]) -> None:
        try:
            self._host.assert_fact(self._name, fact)
        except MessageNotHandledException:
            pass  # no rule pattern mentions this fact: "no match", not an error
        except MessageObservedException:
            pass  # an identical fact is already present
        except Exception as exc:
            raise EngineError(f"the rules engine failed on a {fact.get('t', '?')} fact: {exc}") from exc
        state = self._host.get_state(self._name, sid)
        if state.get("exception"):
            raise EngineError(f"a rule action failed: {str(state['exception']).split(', traceback')[0]}")

    def live_facts(self, sid: str) -> list[dict[str, Any]]:
        """Facts held by a session (for tests proving sessions are gone)."""
        with _ENGINE_LOCK:
            try:
                return self._host.get_facts(self._name, sid)
            except Exception:  # noqa: BLE001 - no such session
                return []

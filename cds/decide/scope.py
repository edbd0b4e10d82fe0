"""Whether the rule pack applies to the patient at all. Pure code, on the facts.

Two kinds of patient are out of scope, and get no advice whatever their data:

* deceased patients (``Patient.deceasedBoolean`` true or a ``deceasedDateTime``): advice about monitoring
  and treatment has no one to act on it;
* patients younger than the ``adult_min_age`` threshold (default 18): the adult DXA bands, the Hadji
  thresholds and the adult screening cadences do not apply to children and adolescents (ISCD paediatric
  positions: Z-scores only, interpreted by a specialist).

No card says so: for the deceased the clinical reference asks for no advisory cards, and for children a
card that only says "this adult service does not apply" gives the clinician nothing to act on, on every
chart opened in a paediatric clinic. The evaluation (and so the audit record, ``outOfScope``) and
``cds evaluate`` say which, and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cds.rules.pack import RulePack


def out_of_scope(facts: Iterable[dict[str, Any]], pack: RulePack) -> dict[str, Any] | None:
    """``{"code": "deceased" or "below_min_age", "reason": ...}`` when out of scope, else None."""
    patient = next((f for f in facts if f.get("t") == "patient"), None)
    if patient is None:
        return None
    if patient.get("deceased"):
        when = f" on {patient['deceased_date']}" if patient.get("deceased_date") else ""
        return {"code": "deceased",
                "reason": f"the patient is recorded as deceased{when}: no bone-health advice is given"}
    age, minimum = patient.get("age"), pack.thresholds.get("adult_min_age", {}).get("value")
    if isinstance(age, int | float) and isinstance(minimum, int | float) and age < minimum:
        return {"code": "below_min_age",
                "reason": f"the patient is {age:g}, younger than {minimum:g} (adult_min_age): the adult bone "
                          "rules do not apply (ISCD paediatric positions), so no advice is given"}
    return None

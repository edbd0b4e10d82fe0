"""The services this CDS service offers and their prefetch templates (built from the pack's value sets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from cds.hooks.models import Discovery, Service
from cds.rules.pack import RulePack

T = TypeVar("T")

SERVICES = (
    ("bone-health-patient-view", "patient-view", "Bone health on aromatase inhibitors (chart review)"),
    ("bone-health-order-select", "order-select", "Bone health on aromatase inhibitors (while ordering)"),
    ("bone-health-order-sign", "order-sign", "Bone health on aromatase inhibitors (before signing)"),
)

DESCRIPTION = (
    "Bone-health advice for patients on aromatase inhibitors: low estradiol in men, falling DXA "
    "bone density, missing or low 25-OH vitamin D, calcium and testosterone monitoring, overdue monitoring, "
    "and calcium and vitamin D before bone-directed therapy is ordered. Every card cites its source."
)


#: the prefetch key of the patient's active and on-hold test orders. The rules never read it: it can only
#: silence a card (``cds.call.suppression``), so when it can be neither sent nor fetched the call goes on
#: without it (never a 412)
PENDING_ORDERS = "pendingOrders"
#: the order kinds (``valuesets.yaml`` ``orders``) it asks for
PENDING_ORDER_KINDS = ("dxa_scan", "estradiol_test", "vitamin_d_test", "calcium_test", "testosterone_test")
#: prefetch keys whose absence is never a 412
OPTIONAL_KEYS = frozenset({PENDING_ORDERS})


def rule_keys(by_key: Mapping[str, T]) -> dict[str, T]:
    """The entries (templates, or gathered data) of the keys the rules read: all but the optional ones."""
    return {key: value for key, value in by_key.items() if key not in OPTIONAL_KEYS}


def prefetch_templates(pack: RulePack) -> dict[str, str]:
    vs = pack.valuesets
    loinc = vs["systems"]["loinc"]

    def codes(values: list[str]) -> str:
        return ",".join(f"{loinc}|{c}" for c in values)

    # each analyte names the prefetch key that asks for it (``labs.<name>.prefetch``, checked by the pack)
    by_key: dict[str, list[str]] = {}
    for spec in vs["labs"].values():
        by_key.setdefault(spec["prefetch"], []).extend(spec["loinc"])
    dxa_codes = [
        c for site in vs["dxa"].values() for kind in ("t_score", "z_score", "bmd") for c in site[kind]
    ]
    observations = "Observation?patient={{context.patientId}}&code="
    return {
        "patient": "Patient/{{context.patientId}}",
        "estradiol": observations + codes(by_key.get("estradiol", [])),
        "vitaminD": observations + codes(by_key.get("vitaminD", [])),
        "dxa": observations + codes(dxa_codes),
        # testosterone, calcium (with albumin and ionized calcium) and the bone turnover markers
        "monitoring": observations + codes(by_key.get("monitoring", [])),
        "medications": (
            "MedicationRequest?patient={{context.patientId}}&status=active,on-hold,completed,stopped"
            "&_include=MedicationRequest:medication"
        ),
        # the tests already ordered and not yet resulted: read only to keep a "due" card quiet
        PENDING_ORDERS: (
            "ServiceRequest?patient={{context.patientId}}&status=active,on-hold&code="
            + ",".join(f"{vs['systems'][system]}|{code}" for kind in PENDING_ORDER_KINDS
                       for system, wanted in vs["orders"][kind].items() for code in wanted)
        ),
    }


def discovery_document(pack: RulePack) -> dict[str, Any]:
    """The discovery answer, built through its model (``cds/hooks/models.py``)."""
    prefetch = prefetch_templates(pack)
    services = [Service(id=service_id, hook=hook, title=title, description=DESCRIPTION, prefetch=prefetch)
                for service_id, hook, title in SERVICES]
    return Discovery(services=services).model_dump(exclude_none=True)


def hook_of(service_id: str) -> str | None:
    return next((hook for sid, hook, _ in SERVICES if sid == service_id), None)

"""The budget of one hook call: wall-clock time and work (resources validated), so that no request body,
however large or numerous its resources, can hold a worker for long.

``Budget.check(stage)`` raises ``BudgetExceeded`` (503, an OperationOutcome naming the budget) once the
call has run longer than ``seconds``; ``Budget.relevant(predicate)`` wraps the relevance filter the FHIR
parser asks before validating each resource, so every resource costs a time check and every one that
would be validated counts against ``max_resources``. The call's audit record carries the same message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cds.errors import BudgetExceeded


class Budget:
    def __init__(self, seconds: float | None, max_resources: int | None,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.max_resources, self.clock = seconds, max_resources, clock
        self.started = clock()
        self.resources = 0

    def check(self, stage: str) -> None:
        if self.seconds is not None and self.seconds > 0 and self.clock() - self.started > self.seconds:
            raise BudgetExceeded(f"the call ran out of its time budget of {self.seconds:g} s "
                                 f"(CDS_CALL_BUDGET_SECONDS) while {stage}; no advice was given",
                                 field="(call)")

    def count(self) -> None:
        self.resources += 1
        if self.max_resources is not None and self.max_resources > 0 and self.resources > self.max_resources:
            raise BudgetExceeded(f"the call holds more than {self.max_resources} resources to validate "
                                 "(CDS_CALL_MAX_RESOURCES); no advice was given", field="(call)")

    def relevant(self, predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def counted(resource: Any) -> bool:
            self.check("validating FHIR resources")
            if not predicate(resource):
                return False
            self.count()
            return True

        return counted

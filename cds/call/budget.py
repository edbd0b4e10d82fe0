"""The budget of one hook call: wall-clock time and work (resources validated, requests sent to the FHIR
server), so that no request body, however large or numerous its resources, and no FHIR server, however
slow or however many pages it offers, can hold a worker for long.

``Budget.check(stage)`` raises ``BudgetExceeded`` (503, an OperationOutcome naming the budget) once the
call has run longer than ``seconds``; ``Budget.relevant(predicate)`` wraps the relevance filter the FHIR
parser asks before validating each resource (``cds.fhir.relevance.Counted``: plain data, so the parser never
calls back into this layer), so every resource costs a time check and every one that would be validated
counts against ``max_resources``. While prefetch data is fetched the budget is the
thread's ``cds.deadline.CallLimit``: each GET (page, retry) is checked and counted against
``max_requests``, and its timeouts end when the budget does. The call's audit record carries the same
message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cds.errors import BudgetExceeded
from cds.fhir.relevance import Counted


class Budget:
    def __init__(self, seconds: float | None, max_resources: int | None,
                 clock: Callable[[], float] = time.monotonic, max_requests: int | None = None):
        self.seconds, self.max_resources, self.clock = seconds, max_resources, clock
        self.max_requests = max_requests
        self.started = clock()
        self.resources = 0
        self.requests = 0

    def remaining(self) -> float | None:
        """Seconds left (negative once over), or None when the time is not limited."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.seconds - (self.clock() - self.started)

    def exceeded(self, stage: str) -> BudgetExceeded:
        return BudgetExceeded(self._late(stage), field="(call)")

    def _late(self, stage: str) -> str:
        return (f"the call ran out of its time budget of {self.seconds or 0:g} s (CDS_CALL_BUDGET_SECONDS) "
                f"while {stage}; no advice was given")

    def check(self, stage: str) -> None:
        left = self.remaining()
        if left is not None and left < 0:
            raise self.exceeded(stage)

    def count_request(self, stage: str) -> None:
        self.requests += 1
        if self.max_requests is not None and self.max_requests > 0 and self.requests > self.max_requests:
            raise BudgetExceeded(f"the call needs more than {self.max_requests} requests to the FHIR server "
                                 f"(CDS_CALL_MAX_FHIR_REQUESTS) while {stage}; no advice was given",
                                 field="(call)")

    def count(self) -> None:
        self.resources += 1
        if self.max_resources is not None and self.max_resources > 0 and self.resources > self.max_resources:
            raise BudgetExceeded(self._too_many(), field="(call)")

    def _too_many(self) -> str:
        return (f"the call holds more than {self.max_resources} resources to validate "
                "(CDS_CALL_MAX_RESOURCES); no advice was given")

    def relevant(self, predicate: Callable[[Any], bool]) -> Counted:
        """``predicate`` under this budget (``cds.fhir.relevance.Counted``): the parser's filter, which checks
        the time and counts the resources it lets through with no call back into this layer."""
        seconds = self.seconds
        deadline = self.started + seconds if seconds is not None and seconds > 0 else None
        return Counted(predicate, clock=self.clock, deadline=deadline, max_resources=self.max_resources,
                       late=self._late("validating FHIR resources"), too_many=self._too_many())

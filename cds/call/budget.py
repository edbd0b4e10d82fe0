"""The budget of one hook call: wall-clock time and work (resources validated, requests sent to the FHIR
server), so that no request body, however large or numerous its resources, and no FHIR server, however
slow or however many pages it offers, can hold a worker for long.

``Budget.check(stage)`` raises ``BudgetExceeded`` (503, an OperationOutcome naming the budget) once the
call has run longer than ``seconds``; ``cds.fhir.relevance.Counted(predicate, budget)`` wraps the relevance
filter the FHIR parser asks before validating each resource, so every resource costs a time check and every
one that would be validated counts against ``max_resources``. While prefetch data is fetched the budget is the
thread's ``cds.deadline.CallLimit``: each GET (page, retry) is checked and counted against
``max_requests``, and its timeouts end when the budget does. The call's audit record carries the same
message.

The class is ``cds.deadline.Budget`` (base): the FHIR parser and client that ask it then call nothing above
their own layer; the call layer makes one per call (``cds.call.service.HookService.call``).
"""

from __future__ import annotations

from cds.deadline import Budget

__all__ = ["Budget"]

"""The decision core: facts from FHIR resources, findings from rule firings, cards, and the whole hook
call."""

"""FHIR R4 data: parsing with ``fhir.resources.R4B``, references, units, relevance, tidying draft orders
for echo, and fetching from the EHR's FHIR server."""

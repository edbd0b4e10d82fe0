"""FHIR R4 data: parsing with ``fhir.resources.R4B``, units, relevance, and fetching from the EHR's FHIR
server."""

"""Care gaps for a whole population: the rule pack over a FHIR Bulk Data export (``cds gaps``).

    export.py    the export folder: its files (manifest and names), each checked as NDJSON, read line by line
    partition.py the map phase (each line to a bucket by its patient) and the reduce phase (each bucket's
                 patients evaluated through the hook's own call layer, their gaps written)
    gaps.py      one patient through ``HookService.call`` (patient-view), and its cards as DetectedIssues
    outputs.py   gaps.ndjson, gaps.csv and summary.json, merged from the partitions in a defined order
    report.py    report.html: one self-contained page (inline SVG charts)
    run.py       ``run_gaps``: the run, in-process or on a Dask cluster, audited
    cli.py       the ``cds gaps`` command
    bulk.py      ``cds gaps --fhir-server``: a Bulk Data ``$export`` asked of a FHIR server (SMART Backend
                 Services or a given token), polled and downloaded into an export folder
"""

"""The prefetch template tokens of CDS Hooks 2.0, and filling them: one grammar for the whole project.

A token is ``{{ name }}`` (spaces inside the braces allowed), the name a dotted identifier:

* ``{{context.X}}``  a root field of the hook's ``context`` holding a primitive (string, number, boolean);
  ``context.patientId`` is the patient id as the envelope normalised it (without a ``Patient/`` prefix);
* ``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``,
  ``{{userRelatedPersonId}}``  the id part of ``context.userId`` when its resource type is the one the
  token names.

Anything else cannot be filled. The service renders its own templates with ``fill`` before it asks a FHIR
server (``cds.call.prefetch``); the toolkit fills the same templates the way an EHR would before it answers
them from a fixture (``cds.toolkit.prefetch_answer``), and, as the specification asks of a client, leaves
out a key whose template it cannot fill.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from cds.errors import DataUnavailable

TOKEN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")

#: prefetch token -> the resource type ``context.userId`` must name for the token to be filled
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def tokens(template: str) -> list[str]:
    """The token names of ``template``, in order."""
    return TOKEN.findall(template)


def fill(template: str, context: Mapping[str, Any], *, patient_id: str | None = None) -> str:
    """``template`` with every token replaced from ``context``, each value URL-encoded.

    ``patient_id`` (default ``context["patientId"]``) fills ``{{context.patientId}}``. Raises
    ``DataUnavailable`` naming the token when one cannot be filled.
    """
    user_type, _, user_id = str(context.get("userId", "")).partition("/")

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        found: Any
        if token == "context.patientId" and patient_id is not None:
            found = patient_id
        elif token.startswith("context.") and token.count(".") == 1:
            found = context.get(token[len("context."):])
            if isinstance(found, bool):
                found = "true" if found else "false"
            if not isinstance(found, str | int | float) or found == "":
                raise DataUnavailable(f"prefetch token {{{{{token}}}}} has no primitive value in the context",
                                      field=token)
        elif token in USER_TOKENS and user_type == USER_TOKENS[token] and user_id:
            found = user_id
        else:
            raise DataUnavailable(f"prefetch token {{{{{token}}}}} cannot be filled from this request",
                                  field=token)
        return quote(str(found), safe="")

    return TOKEN.sub(value, template)

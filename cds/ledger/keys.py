"""The audit's secret keys: the patient-key secret and the link secret, from a setting or from a file.

Every secret key, from the environment (or ``CDS_SECRETS_DIR``) or from its file, is at least
``SECRET_MIN_CHARS`` characters, checked at start-up: ``cds/settings.py`` checks the setting, ``read_file``
the file (an empty, blank or short file is refused in one line naming the setting that names it).

A missing file is created in development with a random secret, atomically: written in full to a temporary
file in the same folder, then linked to its name, which never replaces a file another process put there
first. Processes starting together therefore all read the same secret, and none ever reads a part of it.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cds.errors import ConfigurationError
from cds.settings import SECRET_MIN_CHARS, default

log = logging.getLogger("cds.audit")

MAX_FILE_BYTES = 4096  # a secret file is read no further


def read_file(path: Path, file_setting: str) -> bytes:
    """The secret in ``path`` (surrounding white space removed), refused when shorter than the minimum."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"setting CDS_{file_setting}={str(path)!r} is refused: the file cannot be "
                                 f"read ({exc.strerror or exc})") from None
    try:
        secret = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        secret = ""
    if len(raw) > MAX_FILE_BYTES or len(secret) < SECRET_MIN_CHARS:
        raise ConfigurationError(
            f"setting CDS_{file_setting}={str(path)!r} is refused: it accepts a file holding a secret of at "
            f"least {SECRET_MIN_CHARS} characters (UTF-8, at most {MAX_FILE_BYTES} bytes); "
            f"this one holds {len(secret)}")
    return secret.encode("utf-8")


def create_file(path: Path) -> bool:
    """Put a new random secret at ``path`` unless a file is there already; True when this call made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)  # atomic, and never over an existing file (unlike a rename)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def secret_key(values: Mapping[str, Any], name: str, file_setting: str, changes: str, *,
               create: bool = True) -> bytes:
    """The secret of setting ``name``, or else the one in the file named by ``file_setting`` (created with a
    random secret when missing and ``create`` is true)."""
    configured = str(values.get(name) or "")
    if configured:
        return configured.encode("utf-8")  # its length was checked with the other settings
    path = Path(values.get(file_setting) or default(file_setting))
    if not path.exists():
        if not create:
            raise ConfigurationError(f"setting CDS_{name} is not set and CDS_{file_setting}={str(path)!r} "
                                     "names no file")
        if create_file(path):
            log.warning("CDS_%s is not set: generated a development secret in %s. Set the secret in "
                        "production; %s.", name, path, changes)
    elif str(path) == default(file_setting):
        log.warning("CDS_%s is not set: using the development secret in %s", name, path)
    return read_file(path, file_setting)


def patient_secret(values: Mapping[str, Any]) -> bytes:
    """``AUDIT_PATIENT_KEY_SECRET``, or the secret in ``AUDIT_SECRET_FILE`` (made once in development)."""
    return secret_key(values, "AUDIT_PATIENT_KEY_SECRET", "AUDIT_SECRET_FILE",
                      "patient keys change when it changes")


def link_secret(values: Mapping[str, Any], *, create: bool = True) -> bytes:
    """``LINK_SECRET`` (signs the clinicians' card links), or the secret in ``LINK_SECRET_FILE``."""
    return secret_key(values, "LINK_SECRET", "LINK_SECRET_FILE",
                      "every replica needs the same one, and card links already issued stop opening when it "
                      "changes", create=create)


def production_link_secret_problem(values: Mapping[str, Any]) -> str | None:
    """Why ``--prod`` must not start with these settings' link secret (None when it may): it needs
    ``LINK_SECRET``, or ``LINK_SECRET_FILE`` naming a file the operator put there; never the development
    file, and never one generated now."""
    if not values.get("AUDIT") or values.get("LINK_SECRET"):
        return None
    if str(values.get("LINK_SECRET_FILE") or "") in ("", default("LINK_SECRET_FILE")):
        return ("--prod needs CDS_LINK_SECRET (or CDS_LINK_SECRET_FILE naming the file that holds it), the "
                "same on every replica: it signs the cards' \"Why this card?\" links")
    try:
        link_secret(values, create=False)
    except ConfigurationError as exc:
        return exc.message
    return None

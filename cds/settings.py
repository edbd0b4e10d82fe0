"""Settings, declared once as data, read into a typed model.

Each setting has a name, a default, a parser, one line of help and the values it accepts (``ge``, ``gt``,
``le``, ``choices``, ``min_length``; ``secret`` ones are never repeated in a message). Values come from, in
order: the defaults below, a file per setting in ``CDS_SECRETS_DIR``, ``CDS_*`` environment variables, then
the mapping given to ``create_app(config)``. ``cds/settings_model.py`` builds the pydantic-settings model
from these declarations and checks every value at start-up (``load``; importing this module, to read a
declaration or a default, does not load pydantic-settings): a refused one is a ``ConfigurationError`` of
one line naming the variable and what it accepts. ``docs/configuration.md`` documents every setting;
``tests/test_docs.py`` keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cds.settings_declare import (  # the parsers a declaration names
    Setting,
    _bool,
    _csv,
    _float,
    _folder,
    _int,
    _str,  # noqa: F401 - the default parser, which a declaration may also name
    warn_unknown,
)

__all__ = ["SECRET_MIN_CHARS", "SETTINGS", "Setting", "default", "load"]


def _token(raw: Any) -> str:
    """A bearer token: empty (none), or at least 16 characters with no space."""
    value = str(raw).strip()
    if value and (len(value) < 16 or any(c.isspace() for c in value)):
        raise ValueError("a token must be at least 16 characters, without spaces")
    return value


#: The shortest secret key accepted, from the environment or a file (checked at start-up).
SECRET_MIN_CHARS = 16

SETTINGS: tuple[Setting, ...] = (
    Setting("RULES_DIR", "", "Folder holding the rule pack; empty means the packaged `rules/` folder."),
    Setting(
        "SITE_CONFIG", "", "YAML file of site threshold overrides applied on top of `rules/thresholds.yaml`."
    ),
    Setting(
        "DATABASE_URL",
        "sqlite:///instance/cds-audit.sqlite3",
        "SQLAlchemy URL of the audit database (SQLite by default; "
        "`postgresql+psycopg://...` for PostgreSQL).",
        min_length=1, secret=True,
    ),
    Setting("SOURCE_LABEL", "Bone Health CDS", "Label shown as the source of every card.", min_length=1),
    Setting(
        "PUBLIC_URL",
        "",
        "External base URL of the service: a client token's `aud` must name the endpoint under it, and card "
        "links start with it. Empty: the address `cds serve` is bound to (`--prod` refuses to start).",
    ),
    Setting(
        "AUDIENCES",
        (),
        "Comma-separated further base URLs the service answers to (a token's `aud` may name the endpoint "
        "under any of them).",
        _csv,
    ),
    Setting("MAX_BODY_BYTES", 5_000_000, "Largest accepted request body, in bytes (413 above it).", _int,
            ge=1),
    Setting(
        "MAX_BUNDLE_ENTRIES",
        5_000,
        "Most entries accepted in one prefetch or draftOrders Bundle (413 above it).",
        _int,
        ge=1,
    ),
    Setting("MAX_JSON_DEPTH", 64, "Deepest JSON nesting accepted in a request body (400 above it).", _int,
            ge=1, le=1000),
    Setting(
        "FHIR_SERVER_ALLOWLIST",
        (),
        "Comma-separated base URLs of the FHIR servers the service may "
        "fetch from; a request's `fhirServer` must lie under one (scheme, host, port, path prefix). "
        "Empty: none.",
        _csv,
    ),
    Setting("FHIR_CONNECT_TIMEOUT", 2.0, "Seconds to wait for a connection to the FHIR server.", _float,
            gt=0),
    Setting(
        "FHIR_READ_TIMEOUT", 5.0, "Seconds to wait for the FHIR server to answer once connected.", _float,
        gt=0,
    ),
    Setting("FHIR_RETRIES", 2, "Retries of a FHIR GET answered 429, 502, 503 or 504 (0: no retry).", _int,
            ge=0, le=10),
    Setting(
        "FHIR_BACKOFF_SECONDS", 0.25, "First retry delay in seconds, doubled for each further retry.", _float,
        ge=0,
    ),
    Setting(
        "FHIR_RETRY_AFTER_CAP_SECONDS",
        2.0,
        "Longest delay honoured from a Retry-After header (seconds).",
        _float,
        ge=0,
    ),
    Setting(
        "FHIR_MAX_PAGES",
        10,
        "Most pages followed through `next` links for one prefetch key (412 above it).",
        _int,
        ge=1,
    ),
    Setting("FHIR_MAX_RESOURCES", 2_000, "Most resources fetched for one prefetch key (412 above it).", _int,
            ge=1),
    Setting("FHIR_RESPONSE_SECONDS", 10.0, "Deadline of one FHIR GET, from connect to the last byte of its "
            "answer (a server still sending its status line, headers or body is cut off: 412).", _float,
            gt=0),
    Setting("FHIR_MAX_RESPONSE_BYTES", 20_000_000, "Largest answer accepted from the FHIR server for one "
            "GET, in bytes (412 above it).", _int, ge=1),
    Setting("BULK_CLIENT_ID", "", "`cds gaps --fhir-server`: the SMART Backend Services client id (the `iss` "
            "and `sub` of the client assertion); empty: no token asked for (see `--token-file`)."),
    Setting("BULK_KEY_FILE", "", "`cds gaps --fhir-server`: the private JWK (or JWK Set) file signing the "
            "client assertion, RS384 or ES384, with its `kid`; needed with CDS_BULK_CLIENT_ID."),
    Setting("BULK_SCOPE", "system/*.rs", "`cds gaps --fhir-server`: the scope asked of the token endpoint.",
            min_length=1),
    Setting("BULK_EXPORT_SECONDS", 3600.0, "`cds gaps --fhir-server`: longest the whole Bulk Data export may "
            "take, from kick-off to the last file downloaded.", _float, gt=0),
    Setting("BULK_REQUEST_SECONDS", 30.0, "`cds gaps --fhir-server`: deadline of each request to the FHIR "
            "server or its token endpoint (connect and each read of a download).", _float, gt=0),
    Setting("BULK_POLL_MAX_SECONDS", 120.0, "`cds gaps --fhir-server`: longest wait between two status "
            "checks, whatever the server's Retry-After.", _float, gt=0),
    Setting("BULK_MAX_FILE_BYTES", 2_000_000_000, "`cds gaps --fhir-server`: largest file of an export "
            "downloaded, in bytes (the export fails above it).", _int, ge=1),
    Setting("CALL_BUDGET_SECONDS", 15.0, "Longest one hook call may run (fetching, validating, evaluating) "
            "before it is answered 503 naming the budget; 0 means no limit.", _float, ge=0),
    Setting("CALL_MAX_RESOURCES", 5_000, "Most FHIR resources one hook call may have validated, over every "
            "prefetch key and the draft orders (503 above it); 0 means no limit.", _int, ge=0),
    Setting("CALL_MAX_FHIR_REQUESTS", 40, "Most GETs one hook call may send to the FHIR server, over every "
            "prefetch key, pages and retries included (503 above it); 0 means no limit.", _int, ge=0),
    Setting(
        "MODEL_CACHE_SIZE",
        20_000,
        "Validated FHIR resources kept per process for warm patients (0 turns the cache off).",
        _int,
        ge=0,
    ),
    Setting(
        "SUGGESTION_CACHE_SIZE",
        1_024,
        "Suggestion resources found valid R4 kept per process, by their exact JSON text, so that the same "
        "suggestion is not validated again (0 turns the cache off).",
        _int,
        ge=0,
    ),
    Setting("CACHE_MAX_BYTES", 512 << 20, "Most bytes the per-process caches may hold together (validated "
            "models 40%, facts 30%, shared elements 15%, suggestions 15%), each entry sized by the JSON text "
            "it was made from; least recently used out first (0 turns them off).", _int, ge=0),
    Setting(
        "FACTS_CACHE_SIZE",
        1_000,
        "Calls' derived facts and rule firings kept per process (about 25 kB each for a patient with 40 "
        "Observations), by a digest of the prefetch data, draft orders, patient, selections, evaluation "
        "date and rule pack (site configuration included) they come from; any change is a miss (0 turns "
        "the cache off).",
        _int,
        ge=0,
    ),
    Setting("AUDIT", True, "Record every hook call in the audit trail (and serve the auditor pages).", _bool),
    Setting(
        "AUDIT_PATIENT_KEY_SECRET",
        "",
        "Secret for the HMAC-SHA256 patient keys in audit records; empty means a development secret kept "
        "in AUDIT_SECRET_FILE (a warning is logged).",
        min_length=SECRET_MIN_CHARS, secret=True,
    ),
    Setting(
        "AUDIT_SECRET_FILE",
        "instance/audit-patient-key.secret",
        "File holding the development patient-key secret (used when AUDIT_PATIENT_KEY_SECRET is empty).",
        min_length=1,
    ),
    Setting(
        "LINK_SECRET",
        "",
        "Secret signing each card's \"Why this card?\" link (at least 16 characters; the same on every "
        "replica); empty means a development secret kept in LINK_SECRET_FILE (a warning is logged).",
        min_length=SECRET_MIN_CHARS, secret=True,
    ),
    Setting(
        "LINK_SECRET_FILE",
        "instance/link.secret",
        "File holding the development link secret (used when LINK_SECRET is empty).",
        min_length=1,
    ),
    Setting(
        "SECRETS_DIR",
        "",
        "Folder of secret files, one per setting, each named by its variable (e.g. `CDS_LINK_SECRET`); a "
        "variable set in the environment wins over its file. Empty: none.",
        _folder,
    ),
    Setting(
        "WHY_LINK_HOURS",
        72.0,
        "Hours a card's \"Why this card?\" link opens its page; after that it answers 410.",
        _float,
        gt=0,
    ),
    Setting(
        "CHART_CACHE_BYTES",
        8_000_000,
        "Bytes of rendered \"Why this card?\" charts kept in memory per process (0 keeps none).",
        _int,
        ge=0,
    ),
    Setting(
        "AUDIT_SPOOL_DIR",
        "instance/audit-spool",
        "Folder of the durable spool that keeps audit records while the database is unavailable.",
        min_length=1,
    ),
    Setting(
        "AUDIT_SPOOL_RETRY_SECONDS",
        5.0,
        "Seconds between attempts to drain the audit spool into the database.",
        _float,
        gt=0,
    ),
    Setting(
        "AUDIT_CHECKPOINT_SECONDS",
        10.0,
        "Seconds between checkpoints of every audit record chain's head (written when a head moved).",
        _float,
        gt=0,
    ),
    Setting(
        "AUDIT_OWN_CHAINS",
        True,
        "On PostgreSQL, each process appends audit records to a hash chain of its own (off: one chain for "
        "every process, under one lock).",
        _bool,
    ),
    Setting("AUDIT_MIGRATE_ON_START", True, "Run the database migrations when the service starts.", _bool),
    Setting(
        "AUDITOR_TOKENS",
        (),
        "Auditor credentials, comma-separated `name:sha256-hex-of-token` "
        "(`cds audit token NAME` makes one); empty means auditor access is closed.",
        _csv,
    ),
    Setting(
        "SUPPRESSION",
        "on",
        "`on`: a card the clinician dealt with (overridden with a reason, its test ordered or pending, or "
        "shown earlier in the same encounter) is kept quiet and recorded as such (docs/rules.md); `off`: "
        "every card shows.",
        choices=("on", "off"),
    ),
    Setting(
        "SUPPRESSION_SCOPE",
        "patient",
        "Whose answer silences a card: `patient` (any clinician's, for this patient) or `clinician` (only "
        "the same user's, by `context.userId`).",
        choices=("patient", "clinician"),
    ),
    Setting(
        "SUPPRESSION_ENCOUNTER_MINUTES",
        0,
        "Without a `context.encounterId`, calls of the same user for the same patient this many minutes "
        "apart count as one encounter (a card shown and not acted on is not shown again); 0: only calls "
        "with the same encounterId do.",
        _int, ge=0, le=1440,
    ),
    Setting("LOG_LEVEL", "INFO", "Python logging level for the service.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    Setting(
        "LOG_FORMAT",
        "text",
        "`text` (human-readable lines, for development) or `json` (one JSON object a line, with each hook "
        "call's `hookInstance` and audit record key; see docs/logging.md).",
        choices=("text", "json"),
    ),
    Setting("HOST", "127.0.0.1", "Address `cds serve` listens on.", min_length=1),
    Setting("PORT", 5000, "Port `cds serve` listens on.", _int, ge=0, le=65535),
    Setting(
        "DEV_MODE",
        True,
        "Development mode: without CDS_TRUSTED_CLIENTS, trust a locally generated "
        "development client. Set false in production.",
        _bool,
    ),
    Setting(
        "TRUSTED_CLIENTS",
        "",
        "JSON file of the trusted CDS clients: each `iss` with its JWK Set or allowed `jku` URLs.",
    ),
    Setting(
        "DEV_CLIENT_DIR",
        "instance/dev-client",
        "Folder holding the development client's key pair (created in development mode).",
        min_length=1,
    ),
    Setting(
        "AUTH_LEEWAY_SECONDS", 30, "Clock skew allowed when checking a client token's `exp` and `iat`.", _int,
        ge=0,
    ),
    Setting(
        "AUTH_MAX_TOKEN_LIFETIME",
        3600,
        "Longest a client token may still be valid for, in seconds (401 above it).",
        _int,
        ge=1,
    ),
    Setting(
        "AUTH_MAX_TOKEN_AGE",
        300,
        "Oldest a client token may be, from its own `iat`, in seconds (401 above it, whatever its `exp`).",
        _int,
        ge=1,
    ),
    Setting(
        "JWKS_CACHE_SECONDS", 300, "How long a JWK Set fetched from a `jku` URL is kept, in seconds.", _int,
        ge=0,
    ),
    Setting(
        "JWKS_TIMEOUT_SECONDS", 5.0, "Deadline of one JWK Set fetch, from connect to last byte, in seconds.",
        _float,
        gt=0,
    ),
    Setting(
        "REPLAY_FALLBACK",
        "none",
        "While the database (the token-id store shared by every host) is unreachable: `none` answers "
        "503, `host` accepts tokens checked against a same-host store only.",
        choices=("none", "host"),
    ),
    Setting(
        "REPLAY_FALLBACK_DIR",
        "",
        "Folder of the same-host token-id store (`REPLAY_FALLBACK=host`); empty means a folder on the RAM "
        "disk `/dev/shm`. Never on the audit spool's disk (the service refuses to start).",
    ),
    Setting(
        "REPLAY_REDIS_URL",
        "",
        "Redis holding the token-id store instead of the database (e.g. `redis://127.0.0.1:6379/0`; "
        "`rediss://` for TLS); empty: the database's `seen_jti` table.",
        secret=True,
    ),
    Setting("REPLAY_REDIS_PREFIX", "cds:jti:", "Prefix of the token-id store's keys in Redis.", min_length=1),
    Setting(
        "REPLAY_WITH_AUDIT",
        True,
        "With the database token-id store and the audit on: a hook call's token id is stored in the "
        "transaction of its audit record (one commit for both, with concurrent calls'), a replay found there "
        "answered 401; off: in a transaction of its own before the call is served.",
        _bool,
    ),
    Setting(
        "REPLAY_REDIS_TIMEOUT_SECONDS",
        1.0,
        "Deadline of each token-id store command to Redis, for connecting and for the answer (and for a free "
        "pooled connection); past it Redis counts as unavailable.",
        _float,
        gt=0,
    ),
    Setting(
        "CORS_ORIGINS",
        "",
        "Comma-separated browser origins allowed to call the CDS endpoints (`*` for "
        "any); empty means no CORS.",
        _csv,
    ),
    Setting("WORKERS", 0, "Server processes of `cds serve --prod`; 0 means 2 x CPU cores + 1.", _int, ge=0),
    Setting("THREADS", 4, "Threads per process for `cds serve --prod` (each answers one complete request "
            "at a time).", _int, ge=1),
    Setting("HEADER_TIMEOUT_SECONDS", 10.0, "`--prod`: a request whose request line and headers are not "
            "complete this many seconds after its first byte is dropped (the connection closed).", _float,
            gt=0),
    Setting("BODY_TIMEOUT_SECONDS", 30.0, "`--prod`: longest the request body may take to arrive once the "
            "headers are in (408 after it).", _float, gt=0),
    Setting("METRICS_ENABLED", True, "Serve Prometheus metrics at `/metrics`.", _bool),
    Setting("METRICS_TOKEN", "", "Bearer token `/metrics` asks for (at least 16 characters); empty means "
            "`/metrics` is open to whoever reaches the port (`--prod` warns).", _token, secret=True),
)

_BY_NAME = {s.name: s for s in SETTINGS}
_WARNED: set[str] = set()


def default(name: str) -> Any:
    """The declared default of a setting (the one place defaults live)."""
    return _BY_NAME[name].default


def load(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return every setting's value: default, then ``CDS_SECRETS_DIR`` files, then ``CDS_*`` environment,
    then ``overrides``; keys of ``overrides`` that are no setting (e.g. Flask's own TESTING) pass through.

    Raises ``ConfigurationError``, one line naming the setting and what it accepts, for a refused value;
    logs a warning naming each ``CDS_`` variable that is no setting.
    """
    from cds.settings_model import read  # pydantic-settings: loaded when settings are read, at start-up

    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    warn_unknown(SETTINGS, environ, _WARNED)
    secrets_dir = str(overrides.get("SECRETS_DIR") or environ.get("CDS_SECRETS_DIR") or "")
    values = read(SETTINGS, overrides, environ, secrets_dir)
    values.update({k: v for k, v in overrides.items() if k not in _BY_NAME})
    return values

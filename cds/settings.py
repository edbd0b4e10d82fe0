"""Settings, declared once as data.

Each setting has a name, a default, a parser and one line of help. Values come from, in order: the
defaults below, ``CDS_*`` environment variables, then the mapping given to ``create_app(config)``.
``docs/configuration.md`` documents every setting; ``tests/test_docs.py`` keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _bool(raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _int(raw: str | int) -> int:
    return int(raw)


def _float(raw: str | float) -> float:
    return float(raw)


def _str(raw: Any) -> str:
    return str(raw)


def _csv(raw: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(x) for x in raw)
    return tuple(part.strip() for part in str(raw).split(",") if part.strip())


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = _str

    @property
    def env(self) -> str:
        return f"CDS_{self.name}"


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
    ),
    Setting("SOURCE_LABEL", "Bone Health CDS", "Label shown as the source of every card."),
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
    Setting("MAX_BODY_BYTES", 5_000_000, "Largest accepted request body, in bytes (413 above it).", _int),
    Setting(
        "MAX_BUNDLE_ENTRIES",
        5_000,
        "Most entries accepted in one prefetch or draftOrders Bundle (413 above it).",
        _int,
    ),
    Setting("MAX_JSON_DEPTH", 64, "Deepest JSON nesting accepted in a request body (400 above it).", _int),
    Setting(
        "FHIR_SERVER_ALLOWLIST",
        (),
        "Comma-separated base URLs of the FHIR servers the service may "
        "fetch from; a request's `fhirServer` must lie under one (scheme, host, port, path prefix). "
        "Empty: none.",
        _csv,
    ),
    Setting("FHIR_CONNECT_TIMEOUT", 2.0, "Seconds to wait for a connection to the FHIR server.", _float),
    Setting(
        "FHIR_READ_TIMEOUT", 5.0, "Seconds to wait for the FHIR server to answer once connected.", _float
    ),
    Setting("FHIR_RETRIES", 2, "Retries of a FHIR GET answered 429, 502, 503 or 504 (0: no retry).", _int),
    Setting(
        "FHIR_BACKOFF_SECONDS", 0.25, "First retry delay in seconds, doubled for each further retry.", _float
    ),
    Setting(
        "FHIR_RETRY_AFTER_CAP_SECONDS",
        2.0,
        "Longest delay honoured from a Retry-After header (seconds).",
        _float,
    ),
    Setting(
        "FHIR_MAX_PAGES",
        10,
        "Most pages followed through `next` links for one prefetch key (412 above it).",
        _int,
    ),
    Setting("FHIR_MAX_RESOURCES", 2_000, "Most resources fetched for one prefetch key (412 above it).", _int),
    Setting("FHIR_RESPONSE_SECONDS", 10.0, "Deadline of one FHIR GET, from connect to the last byte of its "
            "answer (a server still sending its status line, headers or body is cut off: 412).", _float),
    Setting("FHIR_MAX_RESPONSE_BYTES", 20_000_000, "Largest answer accepted from the FHIR server for one "
            "GET, in bytes (412 above it).", _int),
    Setting("CALL_BUDGET_SECONDS", 15.0, "Longest one hook call may run (fetching, validating, evaluating) "
            "before it is answered 503 naming the budget; 0 means no limit.", _float),
    Setting("CALL_MAX_RESOURCES", 5_000, "Most FHIR resources one hook call may have validated, over every "
            "prefetch key and the draft orders (503 above it); 0 means no limit.", _int),
    Setting(
        "MODEL_CACHE_SIZE",
        20_000,
        "Validated FHIR resources kept per process for warm patients (0 turns the cache off).",
        _int,
    ),
    Setting(
        "SUGGESTION_CACHE_SIZE",
        1_024,
        "Suggestion resources found valid R4 kept per process, by their exact JSON text, so that the same "
        "suggestion is not validated again (0 turns the cache off).",
        _int,
    ),
    Setting(
        "FACTS_CACHE_SIZE",
        1_000,
        "Calls' derived facts and rule firings kept per process (about 25 kB each for a patient with 40 "
        "Observations), by a digest of the prefetch data, draft orders, patient, selections, evaluation "
        "date and rule pack (site configuration included) they come from; any change is a miss (0 turns "
        "the cache off).",
        _int,
    ),
    Setting("AUDIT", True, "Record every hook call in the audit trail (and serve the auditor pages).", _bool),
    Setting(
        "AUDIT_PATIENT_KEY_SECRET",
        "",
        "Secret for the HMAC-SHA256 patient keys in audit records; empty means a development secret kept "
        "in AUDIT_SECRET_FILE (a warning is logged).",
    ),
    Setting(
        "AUDIT_SECRET_FILE",
        "instance/audit-patient-key.secret",
        "File holding the development patient-key secret (used when AUDIT_PATIENT_KEY_SECRET is empty).",
    ),
    Setting(
        "LINK_SECRET",
        "",
        "Secret signing each card's \"Why this card?\" link (at least 16 characters; the same on every "
        "replica); empty means a development secret kept in LINK_SECRET_FILE (a warning is logged).",
    ),
    Setting(
        "LINK_SECRET_FILE",
        "instance/link.secret",
        "File holding the development link secret (used when LINK_SECRET is empty).",
    ),
    Setting(
        "WHY_LINK_HOURS",
        72.0,
        "Hours a card's \"Why this card?\" link opens its page; after that it answers 410.",
        _float,
    ),
    Setting(
        "AUDIT_SPOOL_DIR",
        "instance/audit-spool",
        "Folder of the durable spool that keeps audit records while the database is unavailable.",
    ),
    Setting(
        "AUDIT_SPOOL_RETRY_SECONDS",
        5.0,
        "Seconds between attempts to drain the audit spool into the database.",
        _float,
    ),
    Setting(
        "AUDIT_CHECKPOINT_SECONDS",
        10.0,
        "Seconds between checkpoints of every audit record chain's head (written when a head moved).",
        _float,
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
    Setting("LOG_LEVEL", "INFO", "Python logging level for the service."),
    Setting("HOST", "127.0.0.1", "Address `cds serve` listens on."),
    Setting("PORT", 5000, "Port `cds serve` listens on.", _int),
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
    ),
    Setting(
        "AUTH_LEEWAY_SECONDS", 30, "Clock skew allowed when checking a client token's `exp` and `iat`.", _int
    ),
    Setting(
        "AUTH_MAX_TOKEN_LIFETIME",
        3600,
        "Longest a client token may still be valid for, in seconds (401 above it).",
        _int,
    ),
    Setting(
        "AUTH_MAX_TOKEN_AGE",
        300,
        "Oldest a client token may be, from its own `iat`, in seconds (401 above it, whatever its `exp`).",
        _int,
    ),
    Setting(
        "JWKS_CACHE_SECONDS", 300, "How long a JWK Set fetched from a `jku` URL is kept, in seconds.", _int
    ),
    Setting(
        "JWKS_TIMEOUT_SECONDS", 5.0, "Deadline of one JWK Set fetch, from connect to last byte, in seconds.",
        _float
    ),
    Setting(
        "REPLAY_FALLBACK",
        "none",
        "While the database (the token replay store shared by every host) is unreachable: `none` answers "
        "503, `host` accepts tokens checked against a same-host store only.",
    ),
    Setting(
        "REPLAY_FALLBACK_DIR",
        "",
        "Folder of the same-host replay store (`REPLAY_FALLBACK=host`); empty means a folder on the RAM disk "
        "`/dev/shm`. Never on the audit spool's disk (the service refuses to start).",
    ),
    Setting(
        "REPLAY_REDIS_URL",
        "",
        "Redis holding the token replay store instead of the database (e.g. `redis://127.0.0.1:6379/0`; "
        "`rediss://` for TLS); empty: the database's `seen_jti` table.",
    ),
    Setting("REPLAY_REDIS_PREFIX", "cds:jti:", "Prefix of the replay store's keys in Redis."),
    Setting(
        "REPLAY_WITH_AUDIT",
        True,
        "With the database replay store and the audit on: a hook call's token id is stored in the "
        "transaction of its audit record (one commit for both, with concurrent calls'), a replay found there "
        "answered 401; off: in a transaction of its own before the call is served.",
        _bool,
    ),
    Setting(
        "REPLAY_REDIS_TIMEOUT_SECONDS",
        1.0,
        "Deadline of each replay-store command to Redis, for connecting and for the answer (and for a free "
        "pooled connection); past it Redis counts as unavailable.",
        _float,
    ),
    Setting(
        "CORS_ORIGINS",
        "",
        "Comma-separated browser origins allowed to call the CDS endpoints (`*` for "
        "any); empty means no CORS.",
        _csv,
    ),
    Setting("WORKERS", 0, "gunicorn workers for `cds serve --prod`; 0 means 2 x CPU cores + 1.", _int),
    Setting("THREADS", 4, "Threads per worker for `cds serve --prod` (each answers one request at a time).",
            _int),
    Setting("HEADER_TIMEOUT_SECONDS", 10.0, "`--prod`: a connection whose request line and headers are not "
            "complete this many seconds after it opened (or after its last answer) is closed.", _float),
    Setting("BODY_TIMEOUT_SECONDS", 30.0, "`--prod`: longest the request body may take to arrive once the "
            "headers are in (408 after it).", _float),
    Setting("METRICS_ENABLED", True, "Serve Prometheus metrics at `/metrics`.", _bool),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def load(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return every setting's value: default, then ``CDS_*`` environment, then ``overrides``.

    Raises ``ConfigurationError`` naming the setting when a value does not parse.
    """
    from cds.errors import ConfigurationError

    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw: Any = setting.default
        source = "default"
        if setting.env in environ:
            raw, source = environ[setting.env], setting.env
        if setting.name in overrides:
            raw, source = overrides.pop(setting.name), f"config[{setting.name!r}]"
        try:
            values[setting.name] = setting.parse(raw) if raw is not None else None
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"setting {setting.env} from {source}: {exc}") from exc
    # Unknown keys (e.g. Flask's own TESTING) pass through untouched.
    values.update(overrides)
    return values

"""The ``cds`` command line (click): one entry point over the same core as the web service.

    cds serve [--host H] [--port P] [--prod]    run the service (development server; waitress with --prod)
    cds wait --url BASE [--timeout S]           exit 0 once the service answers GET /health
    cds request BUNDLE --hook HOOK --url BASE   send a fixture as a signed hook call, print the cards
    cds replay DIR --url BASE                   replay every fixture with a sidecar, report pass/fail/skip
    cds collection [DIR]... [--out FILE]        a Postman v2.1 request collection of those fixtures
    cds evaluate BUNDLE --hook HOOK [--at DATE] [--json]
    cds gaps EXPORT --out DIR [--at DATE] [--workers N] [--scheduler ADDRESS] [--strict]
                                                the care gaps of a Bulk Data export (cds/population/cli.py)
    cds gaps --fhir-server URL [--group ID] [--token-file FILE] --out DIR
                                                the same, the export asked of a FHIR server first (bulk.py)
    cds rules check [DIR]                       validate a rule pack and the site config
    cds rules valuesets [DIR]                   value-set coverage: codes by system, names, where verified
    cds dev-token --url URL                     print a development client token for a call to URL
    cds audit list|show|verify|export|rerun|migrate|drain|token|patient-key   (cds/review/cli.py)
    cds --version

Before any command (``--help`` and ``--version`` too), the rules engine's library is checked: where the
installed durable-rules cannot run on this Python (PyPI's build on 3.13), the command stops with one line
naming the problem and the command that fixes it (``cds.rules.durable_build``), exit status 3.

Errors are one line on stderr and a non-zero exit status; never a traceback. Output into a closed pipe
(``cds audit list | head -1``) ends quietly. ``main`` returns the exit status (``--help`` and
``--version`` exit through ``SystemExit(0)``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cds.population.cli import gaps_cmd
from cds.review.cli import Commands, Failed, audit, order_of
from cds.toolkit.commands import COMMANDS
from cds.toolkit.request import HOOKS
from cds.version import __version__


@click.group("cds", cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cds", message="%(prog)s %(version)s",
                      help="print the version and exit")
def cli() -> None:
    """Bone-health CDS Hooks service: run it, try it, check its rules and its audit trail."""


@cli.command("serve")
@click.option("--host", help="address to listen on (default: CDS_HOST)")
@click.option("--port", type=click.IntRange(0, 65535), help="port to listen on (default: CDS_PORT)")
@click.option("--prod", is_flag=True,
              help="production server: CDS_WORKERS waitress processes (default 2 x cores + 1)")
def serve_cmd(host: str | None, port: int | None, prod: bool) -> int:
    """Run the service (Flask's development server; waitress processes with --prod)."""
    from cds import create_app

    overrides = {k: v for k, v in {"HOST": host, "PORT": port}.items() if v is not None}
    if prod:
        from cds import settings
        from cds.web.serving import run_production

        return run_production(settings.load(overrides))
    app = create_app(overrides)
    if app.config["LOG_FORMAT"] == "json":  # without Flask's banner, which is printed, not logged
        from werkzeug.serving import run_simple

        run_simple(app.config["HOST"], app.config["PORT"], app, threaded=True)
        return 0
    app.run(host=app.config["HOST"], port=app.config["PORT"], debug=False, threaded=True)
    return 0


@cli.command("evaluate")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--hook", type=click.Choice(HOOKS), default="patient-view", show_default=True,
              help="the hook the bundle is evaluated for (order hooks: its draft orders are the orders)")
@click.option("--at", metavar="DATE", help="evaluation date (ISO, default now)")
@click.option("--json", "as_json", is_flag=True, help='print {"cards": [...], "fired": [...], ...}')
@click.option("--rules", "rules_dir", type=click.Path(file_okay=False),
              help="rule pack folder (default: CDS_RULES_DIR or the packaged rules)")
def evaluate_cmd(bundle: str, hook: str, at: str | None, as_json: bool, rules_dir: str | None) -> int:
    """Evaluate a fixture BUNDLE offline, through the request path of `cds request`, and print the cards."""
    from cds import settings
    from cds.rules import pack as rulepack
    from cds.toolkit.offline import evaluate_bundle, load_bundle, parse_at

    values = settings.load()
    pack = rulepack.load(rules_dir or values["RULES_DIR"] or None, values["SITE_CONFIG"] or None)
    offline = evaluate_bundle(load_bundle(bundle), hook, pack, now=parse_at(at),
                              source_label=values["SOURCE_LABEL"])
    evaluation = offline.evaluation
    if as_json:
        report = {"cards": evaluation.cards, "fired": evaluation.fired,
                  "not_evaluated": evaluation.not_evaluated, "superseded": evaluation.superseded,
                  "out_of_scope": evaluation.out_of_scope}
        click.echo(json.dumps(report, indent=2, default=str))
        return 0
    click.echo(f"{len(evaluation.cards)} card(s) for {bundle} ({hook}, rule pack {pack.version})")
    if evaluation.out_of_scope:
        click.echo(f"out of scope ({evaluation.out_of_scope['code']}): {evaluation.out_of_scope['reason']}")
    for card in evaluation.cards:
        click.echo(f"  [{card['indicator']:<8}] {card['summary']}")
        for s in card.get("suggestions", []):
            click.echo(f"             -> {s['label']}")
    click.echo("rules fired:")
    for fired in evaluation.fired:
        evidence = ", ".join(f"{alias}={_brief(fact)}" for alias, fact in fired["facts"].items())
        order = f" for {order_of(fired)}" if order_of(fired) else ""
        click.echo(f"  {fired['rule']} v{fired['version']}{order}: {evidence}")
    for item in evaluation.superseded:
        click.echo(f"  set aside: {item['rule']} (explained by {item['superseded_by']})")
    for gap in evaluation.not_evaluated:
        click.echo(f"  could not evaluate {gap['rule']}: {gap['reason']}")
    return 0


def _brief(fact: dict[str, Any]) -> str:
    keys = [k for k in ("analyte", "drug_class", "ingredient", "matched_by", "site", "band", "what", "score",
                        "value", "unit", "t_drop", "bmd_drop", "bmd_drop_pct", "date", "sex", "age", "reason")
            if fact.get(k) is not None]
    return fact["t"] + "(" + ", ".join(f"{k}={fact[k]}" for k in keys) + ")"


@cli.group("rules", cls=Commands)
def rules() -> None:
    """Rule-pack tools."""


@rules.command("check")
@click.argument("directory", metavar="[DIR]", required=False, type=click.Path(file_okay=False))
def rules_check_cmd(directory: str | None) -> int:
    """Validate every rule file of the pack in DIR (default: the packaged rules), and the site config
    named by CDS_SITE_CONFIG, if any."""
    from cds import settings
    from cds.rules import pack as rulepack

    site = settings.load()["SITE_CONFIG"] or None
    if site:
        _check_site_file(Path(site))
    pack = rulepack.load(directory, site)
    line = f"rule pack {pack.id} {pack.version}: {len(pack.rules)} rules OK (sha256 {pack.content_hash[:12]})"
    if site:
        overrides = sorted(name for name, t in pack.thresholds.items() if t.get("site_override"))
        line += f"; site config {site}: {len(overrides)} override(s) OK ({', '.join(overrides) or 'none'})"
    click.echo(line)
    return 0


@rules.command("valuesets")
@click.argument("directory", metavar="[DIR]", required=False, type=click.Path(file_okay=False))
def rules_valuesets_cmd(directory: str | None) -> int:
    """List the value-set coverage of the pack in DIR: each set's codes by system, the names matched and
    where each code was verified. Exits 1 when a code says nowhere where it was verified."""
    from cds.rules import pack as rulepack
    from cds.rules.coverage import coverage_text, missing_sources

    pack = rulepack.load(directory)
    click.echo(coverage_text(pack))
    return 1 if missing_sources(pack.valuesets) else 0


def _check_site_file(path: Path) -> None:
    """The site config is a readable YAML mapping with a ``thresholds`` mapping; else a ``Failed`` naming
    the problem (the rule pack names bad overrides)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Failed(f"site config {path} (CDS_SITE_CONFIG): cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise Failed(f"site config {path} (CDS_SITE_CONFIG): not YAML: {reason}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise Failed(f"site config {path} (CDS_SITE_CONFIG): expected a mapping with 'thresholds'")
    unknown = sorted(str(k) for k in data if k != "thresholds")
    if unknown:
        raise Failed(f"site config {path} (CDS_SITE_CONFIG): unknown section(s) {', '.join(unknown)} "
                     "(only 'thresholds' is read)")
    if not isinstance(data.get("thresholds") or {}, dict):
        raise Failed(f"site config {path} (CDS_SITE_CONFIG): 'thresholds' must map names to numbers")


@cli.command("dev-token")
@click.option("--url", required=True, help="exact URL of the endpoint the token is for (its aud)")
@click.option("--lifetime", type=click.IntRange(1), default=300, show_default=True,
              help="seconds the token is valid")
@click.option("--tenant", help="optional tenant claim")
def dev_token_cmd(url: str, lifetime: int, tenant: str | None) -> int:
    """Print a development client token, good for one call to URL."""
    from cds import settings
    from cds.auth.client_token import DEV_ISS, dev_client, sign_client_token

    values = settings.load()
    if values["TRUSTED_CLIENTS"] or not values["DEV_MODE"]:
        click.echo("cds: note: the service trusts the development client only when CDS_DEV_MODE is true and "
                   "CDS_TRUSTED_CLIENTS is not set", err=True)
    private, _ = dev_client(values["DEV_CLIENT_DIR"])
    click.echo(sign_client_token(private, DEV_ISS, url, lifetime=lifetime, tenant=tenant))
    return 0


cli.add_command(audit)
cli.add_command(gaps_cmd)
for _command in COMMANDS:
    cli.add_command(_command)


class _NeverRaised(click.UsageError):
    """Stands in for click's ``NoArgsIsHelpError`` (click >= 8.2) on an older click, which exits 0 instead."""


#: the exit status of a command stopped because the rules engine's library cannot run
ENGINE_UNAVAILABLE = 3

_NO_ARGS: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so that the interpreter's last flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a captured stream): nothing left to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    from cds.rules.durable_build import problem

    engine_problem = problem()
    if engine_problem:
        click.echo(f"cds: {engine_problem}", err=True)
        return ENGINE_UNAVAILABLE
    try:
        try:
            with cli.make_context("cds", args) as ctx:
                result = cli.invoke(ctx)
            sys.stdout.flush()
            return result if isinstance(result, int) else 0
        except click.exceptions.Exit as exc:
            sys.stdout.flush()
            if exc.exit_code == 0:  # --help, --version
                raise SystemExit(0) from None
            return exc.exit_code
        except _NO_ARGS as exc:  # `cds` or `cds audit` alone: the help, as a usage error
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            return exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "cds"
            click.echo(f"cds: error: {exc.format_message()} (see: {where} --help)", err=True)
            return exc.exit_code
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        except click.Abort:
            return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as a process killed by SIGPIPE: the reader went away, nothing more to say

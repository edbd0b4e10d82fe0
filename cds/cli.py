"""The ``cds`` command line: one entry point over the same core as the web service.

    cds serve [--host H] [--port P] [--prod]    run the service (development server; gunicorn with --prod)
    cds request BUNDLE --hook HOOK --url BASE   send a fixture as a signed hook call, print the cards
    cds replay DIR --url BASE                   replay every fixture with a sidecar, report pass/fail
    cds evaluate BUNDLE --hook HOOK [--at DATE] [--json]
    cds rules check [DIR]                       validate a rule pack
    cds dev-token --url URL                     print a development client token for a call to URL
    cds audit list|show|verify|export|replay|migrate|drain|token   the audit trail (cds/audit/cli.py)

Errors are one line on stderr and a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cds.errors import CdsError

HOOKS = ("patient-view", "order-select", "order-sign")


def _serve(args: argparse.Namespace) -> int:
    from cds import create_app

    overrides = {k: v for k, v in {"HOST": args.host, "PORT": args.port}.items() if v is not None}
    if args.prod:
        from cds import settings
        from cds.web.serving import run_production

        return run_production(settings.load(overrides))
    app = create_app(overrides)
    app.run(host=app.config["HOST"], port=app.config["PORT"], debug=False, threaded=True)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cds import settings
    from cds.decide.evaluate import Evaluator
    from cds.fhir import parse as fhir_parse
    from cds.rules import pack as rulepack
    from cds.toolkit.offline import as_bundle, load_bundle, parse_at, split_bundle

    values = settings.load()
    pack = rulepack.load(args.rules or values["RULES_DIR"] or None, values["SITE_CONFIG"] or None)
    bundle = load_bundle(args.bundle)
    patient_id, record, drafts = split_bundle(bundle, args.hook)
    evaluator = Evaluator(pack)
    resources = fhir_parse.parse_all(as_bundle(record), where=args.bundle, relevant=evaluator.relevant)
    draft_models = fhir_parse.parse_all(as_bundle(drafts), where=f"{args.bundle} (draft orders)",
                                        relevant=evaluator.relevant)
    selections = (
        [f"{d['resourceType']}/{d.get('id')}" for d in drafts[:1]] if args.hook == "order-select" else []
    )
    evaluation = evaluator.evaluate(
        resources, draft_models, patient_id=patient_id, now=parse_at(args.at),
        context={"patientId": patient_id, "userId": "Practitioner/example"},
        drafts_by_ref={f"{d['resourceType']}/{d.get('id')}": d for d in drafts}, selections=selections,
        source_label=values["SOURCE_LABEL"])
    if args.json:
        print(json.dumps({"cards": evaluation.cards, "fired": evaluation.fired,
                          "not_evaluated": evaluation.not_evaluated, "superseded": evaluation.superseded},
                         indent=2, default=str))
        return 0
    print(f"{len(evaluation.cards)} card(s) for {args.bundle} ({args.hook}, rule pack {pack.version})")
    for card in evaluation.cards:
        print(f"  [{card['indicator']:<8}] {card['summary']}")
        for s in card.get("suggestions", []):
            print(f"             -> {s['label']}")
    print("rules fired:")
    for fired in evaluation.fired:
        evidence = ", ".join(f"{alias}={_brief(fact)}" for alias, fact in fired["facts"].items())
        print(f"  {fired['rule']} v{fired['version']}: {evidence}")
    for item in evaluation.superseded:
        print(f"  set aside: {item['rule']} (explained by {item['superseded_by']})")
    for gap in evaluation.not_evaluated:
        print(f"  could not evaluate {gap['rule']}: {gap['reason']}")
    return 0


def _brief(fact: dict[str, Any]) -> str:
    keys = [k for k in ("analyte", "drug_class", "ingredient", "matched_by", "site", "band", "what", "score",
                        "value", "unit", "t_drop", "bmd_drop", "bmd_drop_pct", "date", "sex", "age", "reason")
            if fact.get(k) is not None]
    return fact["t"] + "(" + ", ".join(f"{k}={fact[k]}" for k in keys) + ")"


def _rules_check(args: argparse.Namespace) -> int:
    from cds.rules import pack as rulepack

    pack = rulepack.load(args.dir)
    print(f"rule pack {pack.id} {pack.version}: {len(pack.rules)} rules OK (sha256 {pack.content_hash[:12]})")
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    from cds import settings
    from cds.auth.client_token import DEV_ISS, dev_client, sign_client_token

    values = settings.load()
    if values["TRUSTED_CLIENTS"] or not values["DEV_MODE"]:
        print("cds: note: the service trusts the development client only when CDS_DEV_MODE is true and "
              "CDS_TRUSTED_CLIENTS is not set", file=sys.stderr)
    private, _ = dev_client(values["DEV_CLIENT_DIR"])
    print(sign_client_token(private, DEV_ISS, args.url, lifetime=args.lifetime, tenant=args.tenant))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds", description="Bone-health CDS Hooks service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--prod", action="store_true",
                       help="run under gunicorn (CDS_WORKERS workers; default 2 x cores + 1)")
    serve.set_defaults(func=_serve)

    ev = sub.add_parser("evaluate", help="evaluate a FHIR bundle offline and print the cards")
    ev.add_argument("bundle")
    ev.add_argument("--hook", choices=HOOKS, default="patient-view")
    ev.add_argument("--at", help="evaluation date (ISO, default now)")
    ev.add_argument("--json", action="store_true", help='print {"cards": [...], "fired": [...]}')
    ev.add_argument("--rules", help="rule pack folder (default: CDS_RULES_DIR or the packaged rules)")
    ev.set_defaults(func=_evaluate)

    rules = sub.add_parser("rules", help="rule-pack tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate every rule file")
    check.add_argument("dir", nargs="?")
    check.set_defaults(func=_rules_check)

    token = sub.add_parser("dev-token", help="print a development client token (good for one call)")
    token.add_argument("--url", required=True, help="exact URL of the endpoint the token is for (its aud)")
    token.add_argument("--lifetime", type=int, default=300, help="seconds the token is valid (default 300)")
    token.add_argument("--tenant", help="optional tenant claim")
    token.set_defaults(func=_dev_token)
    from cds.audit.cli import add_parser as add_audit_parser

    add_audit_parser(sub)
    from cds.toolkit.commands import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CdsError as exc:
        print(f"cds: error: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            print(f"  - {detail}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"cds: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI answers in one line, never a traceback
        first_line = (str(exc).splitlines() or [""])[0]
        print(f"cds: internal error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 1

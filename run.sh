#!/usr/bin/env bash
# One entry point for a fresh machine:  ./run.sh serve | ./run.sh test [pytest args] | ./run.sh bench [args]
set -euo pipefail
cd "$(dirname "$0")"
VENV=${CDS_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "run.sh: installing the project and its test dependencies into $VENV (first run only)..." >&2
  log="$VENV/install.log"
  if ! { "$VENV/bin/pip" install --upgrade pip && "$VENV/bin/pip" install -e ".[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "run.sh: installation failed; full log in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
cmd=${1:-serve}; shift || true
case "$cmd" in
  serve) exec "$VENV/bin/cds" serve "$@" ;;
  bench) "$VENV/bin/pip" install -q -e ".[bench]" >"$VENV/install-bench.log" 2>&1 \
           || { tail -n 20 "$VENV/install-bench.log" >&2; exit 1; }
         exec "$VENV/bin/python" bench/run.py "$@" ;;
  test)  [ -x scripts/test-prereqs ] && scripts/test-prereqs
         exec "$VENV/bin/python" -m pytest "$@" ;;
  *)     exec "$VENV/bin/cds" "$cmd" "$@" ;;
esac

#!/usr/bin/env bash
# One entry point for a fresh machine:  ./run.sh serve | ./run.sh test [pytest args] | ./run.sh bench [args]
# Python 3.11, 3.12 or 3.13: CDS_PYTHON picks the interpreter (default python3), CDS_VENV the venv
# (default .venv, or .venv-X.Y when CDS_PYTHON is set), e.g.  CDS_PYTHON=python3.13 ./run.sh test
set -euo pipefail
cd "$(dirname "$0")"
PY=${CDS_PYTHON:-python3}
if ! pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
  echo "run.sh: cannot run '$PY'; set CDS_PYTHON to a Python 3.11, 3.12 or 3.13 interpreter" >&2
  exit 1
fi
if [ -n "${CDS_PYTHON:-}" ]; then VENV=${CDS_VENV:-.venv-$pyver}; else VENV=${CDS_VENV:-.venv}; fi
VENV=${VENV%/}

# One installer at a time: a second run.sh on the same venv waits here until the first has installed.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  if ! flock -n 9; then
    echo "run.sh: another run.sh is installing into $VENV; waiting for it..." >&2
    flock 9
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
venvver=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$venvver" != "$pyver" ]; then
  echo "run.sh: $VENV has Python $venvver but $PY is Python $pyver; remove $VENV or set CDS_VENV" >&2
  exit 1
fi
# Reinstall when pyproject.toml or the durable-rules build recipe changes.
stamp="$VENV/.installed-$(cat pyproject.toml scripts/build_durable_rules.py cds/rules/durable_build.py | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "run.sh: installing the project and its test dependencies into $VENV (first run only)..." >&2
  log="$VENV/install.log"
  # durable-rules 2.0.28 is installed from the project's patched wheel (scripts/build_durable_rules.py,
  # built once per Python version into .wheels/pyX.Y): PyPI's sdist does not build on Python 3.13.
  if ! { "$VENV/bin/pip" install --upgrade pip \
         && wheel=$("$VENV/bin/python" scripts/build_durable_rules.py) \
         && "$VENV/bin/pip" install --find-links "$(dirname "$wheel")" -e ".[test]" "$wheel"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "run.sh: installation failed; full log in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
exec 9>&-   # release the install lock: a long-running serve must not hold it

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

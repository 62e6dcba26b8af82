# Sourced by .ci/run and examples/demo.sh: a project virtualenv (.venv) with
# otelkit installed editable plus its test tools, and promtool from Debian's
# prometheus package. Idempotent: a second run only checks.
set -euo pipefail
PY=${PYTHON:-python3}
quiet_pip() {
  # Some machines' pip config names extra local indexes that may be absent: drop that noise only.
  .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
  quiet_pip install -q --upgrade pip
fi
echo "== installing otelkit and its test tools into .venv"
quiet_pip install -q -e ".[${OTELKIT_EXTRAS:-test,bench,lint}]"
if [ "${OTELKIT_NEED_PROMTOOL:-1}" = 1 ] && { ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing promtool and amtool (Debian packages prometheus, prometheus-alertmanager)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null 2>&1 ||
      echo "WARNING: could not install Debian's prometheus/prometheus-alertmanager packages: the stack checks cannot run"
  else
    echo "NOTE: promtool not found and not root: install Debian's 'prometheus' package for the stack checks"
  fi
fi

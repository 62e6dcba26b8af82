#!/usr/bin/env bash
# The main job: run the instrumented pipeline demo (README: "See it work").
# On a fresh machine this creates .venv and installs otelkit into it (via .ci/setup.sh), then
# runs `otelkit demo`. Extra arguments go to the demo, e.g.:
#   examples/demo.sh --show retried          # the trace of an event that needed a retry
#   examples/demo.sh --redis none --postgres none   # force the in-process stand-ins
#   examples/demo.sh --continuous            # keep the pipeline running (for the bundled stack)
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
# The demo needs redis, psycopg2 and httpx (the "demo" extra) and the OTLP receiver of otelkit.testing
# ("test" extra); promtool is only for the stack checks.
OTELKIT_EXTRAS="${OTELKIT_EXTRAS:-demo,test}" OTELKIT_NEED_PROMTOOL=0 source .ci/setup.sh >&2
exec .venv/bin/otelkit demo "$@"

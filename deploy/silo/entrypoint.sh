#!/bin/sh
# HealthFed silo container entrypoint.
#
# Checks the mounts before anything starts (deploy/healthcheck.py preflight: kit present and
# readable, certificate issued by the kit's CA for this silo and not expired, state volume
# writable, /data a read-only mount), renders the effective config into the state volume
# (its summary goes to stderr, so a subcommand's stdout stays clean), records its pid for
# the health probe and execs the node, so `silo-node` is PID 1 and gets SIGTERM from
# `docker stop` directly.
#
#   entrypoint.sh                 -> silo-node run --config <rendered silo.yaml>
#   entrypoint.sh run [ARGS...]   -> same, with extra ARGS (e.g. --exit-when-finished)
#   entrypoint.sh data add ...    -> silo-node data add ... (any other subcommand; state = /state)
#   entrypoint.sh --check [...]   -> preflight, then print the command instead of running it
#
# Settings (environment): HEALTHFED_KIT_DIR (/kit), HEALTHFED_CONFIG ($HEALTHFED_KIT_DIR/silo.yaml),
# HEALTHFED_STATE_DIR (/state), HEALTHFED_DATA_DIR (/data), HEALTHFED_ALLOW_WRITABLE_DATA (unset),
# HEALTHFED_METRICS_PORT / HEALTHFED_METRICS_ADDRESS (0.0.0.0) and HEALTHFED_LOG_FORMAT (text|json),
# passed on as --metrics-port/--metrics-address/--log-format when set.
# Exit codes: those of healthcheck.py preflight (3 kit missing, 4 config invalid, 5 certificate,
# 6 state not writable, 7 data not read-only), else the node's own.
set -eu

HERE=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
KIT_DIR=${HEALTHFED_KIT_DIR:-/kit}
CONFIG=${HEALTHFED_CONFIG:-$KIT_DIR/silo.yaml}
STATE_DIR=${HEALTHFED_STATE_DIR:-/state}
DATA_DIR=${HEALTHFED_DATA_DIR:-/data}
PYTHON=${HEALTHFED_PYTHON:-python}
SILO_NODE=${HEALTHFED_SILO_NODE:-silo-node}
RUNTIME=$STATE_DIR/.healthfed

check_only=0
if [ "$#" -gt 0 ] && [ "$1" = "--check" ]; then
    check_only=1
    shift
fi

status=0
"$PYTHON" "$HERE/healthcheck.py" preflight silo --config "$CONFIG" --state-dir "$STATE_DIR" \
    --data-dir "$DATA_DIR" --render "$RUNTIME/silo.yaml" >&2 || status=$?
if [ "$status" -ne 0 ]; then
    echo "silo entrypoint: refusing to start (exit $status); see the message above" >&2
    exit "$status"
fi

serving=0
if [ "$#" -eq 0 ] || [ "$1" = "run" ]; then
    serving=1
    if [ "$#" -gt 0 ]; then shift; fi
    set -- "$SILO_NODE" run --config "$RUNTIME/silo.yaml" "$@"
    if [ -n "${HEALTHFED_METRICS_PORT:-}" ]; then
        set -- "$@" --metrics-port "$HEALTHFED_METRICS_PORT" --metrics-address "${HEALTHFED_METRICS_ADDRESS:-0.0.0.0}"
    fi
    if [ -n "${HEALTHFED_LOG_FORMAT:-}" ]; then
        set -- "$@" --log-format "$HEALTHFED_LOG_FORMAT"
    fi
else
    # local commands (data, plans, egress, ledger) read the state folder from this variable
    HEALTHFED_SILO_STATE=$STATE_DIR
    export HEALTHFED_SILO_STATE
    set -- "$SILO_NODE" "$@"
fi

if [ "$check_only" -eq 1 ]; then
    printf 'silo entrypoint: would exec:'
    printf ' %s' "$@"
    printf '\n'
    exit 0
fi
if [ "$serving" -eq 1 ]; then
    echo "$$" > "$RUNTIME/pid"   # exec keeps this pid: the health probe checks it
fi
exec "$@"

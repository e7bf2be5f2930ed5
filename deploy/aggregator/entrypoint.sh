#!/bin/sh
# HealthFed aggregator container entrypoint.
#
# Checks the mounts first (deploy/healthcheck.py preflight: aggregator.yaml and TLS files
# readable, server certificate issued by the federation CA, naming healthfed-aggregator and
# not expired, plan valid, state volume writable; a warning if the CA key is mounted),
# renders the effective config into the state volume (summary on stderr; listen address
# of the container, optional database URL), records its pid for the health probe and execs the aggregator.
#
#   entrypoint.sh                  -> aggregator run --config <rendered> --plan $HEALTHFED_PLAN --out ...
#   entrypoint.sh run [ARGS...]    -> same, with extra ARGS
#   entrypoint.sh revoke SILO ...  -> aggregator revoke SILO ... --config <rendered>
#   entrypoint.sh --check [...]    -> preflight, then print the command instead of running it
#
# Settings (environment): HEALTHFED_FEDERATION_DIR (/federation), HEALTHFED_CONFIG
# ($HEALTHFED_FEDERATION_DIR/aggregator.yaml), HEALTHFED_PLAN (/plans/plan.json), HEALTHFED_STATE_DIR
# (/state), HEALTHFED_OUT ($HEALTHFED_STATE_DIR/runs/<plan file name>), HEALTHFED_LISTEN_ADDRESS
# (0.0.0.0:50051), HEALTHFED_DATABASE_URL (unset: SQLite in the state volume), HEALTHFED_LINGER_S
# (unset: the CLI's default), HEALTHFED_ENROLMENT_DIR (unset: enrolment_dir of aggregator.yaml, i.e.
# $HEALTHFED_FEDERATION_DIR/enrolled: the records `aggregator enrol` wrote; a secure-aggregation plan
# without a cohort runs with the hospitals enrolled there), HEALTHFED_METRICS_PORT / HEALTHFED_METRICS_ADDRESS (0.0.0.0),
# HEALTHFED_LOG_FORMAT (text|json), HEALTHFED_OPERATOR (required to run a plan: the coordinator who
# starts it, recorded in the aggregator's audit log as plan.started).
# Exit codes: those of healthcheck.py preflight (3 file missing, 4 config invalid, 5 certificate,
# 6 state not writable, 8 plan invalid, 11 HEALTHFED_OPERATOR unset), else the aggregator's own.
set -eu

HERE=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
FEDERATION_DIR=${HEALTHFED_FEDERATION_DIR:-/federation}
CONFIG=${HEALTHFED_CONFIG:-$FEDERATION_DIR/aggregator.yaml}
PLAN=${HEALTHFED_PLAN:-/plans/plan.json}
STATE_DIR=${HEALTHFED_STATE_DIR:-/state}
LISTEN=${HEALTHFED_LISTEN_ADDRESS:-0.0.0.0:50051}
PYTHON=${HEALTHFED_PYTHON:-python}
AGGREGATOR=${HEALTHFED_AGGREGATOR:-aggregator}
RUNTIME=$STATE_DIR/.healthfed

check_only=0
if [ "$#" -gt 0 ] && [ "$1" = "--check" ]; then
    check_only=1
    shift
fi
serving=0
if [ "$#" -eq 0 ] || [ "$1" = "run" ]; then
    serving=1
fi

status=0
if [ "$serving" -eq 1 ]; then
    # `run` needs the plan; `revoke` does not
    "$PYTHON" "$HERE/healthcheck.py" preflight aggregator --config "$CONFIG" --state-dir "$STATE_DIR" \
        --render "$RUNTIME/aggregator.yaml" --listen "$LISTEN" --plan "$PLAN" \
        ${HEALTHFED_DATABASE_URL:+--database-url "$HEALTHFED_DATABASE_URL"} \
        ${HEALTHFED_ENROLMENT_DIR:+--enrolment-dir "$HEALTHFED_ENROLMENT_DIR"} >&2 || status=$?
else
    "$PYTHON" "$HERE/healthcheck.py" preflight aggregator --config "$CONFIG" --state-dir "$STATE_DIR" \
        --render "$RUNTIME/aggregator.yaml" --listen "$LISTEN" \
        ${HEALTHFED_DATABASE_URL:+--database-url "$HEALTHFED_DATABASE_URL"} \
        ${HEALTHFED_ENROLMENT_DIR:+--enrolment-dir "$HEALTHFED_ENROLMENT_DIR"} >&2 || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "aggregator entrypoint: refusing to start (exit $status); see the message above" >&2
    exit "$status"
fi

if [ "$serving" -eq 1 ]; then
    if [ "$#" -gt 0 ]; then shift; fi
    plan_name=$(basename -- "$PLAN" .json)
    OUT=${HEALTHFED_OUT:-$STATE_DIR/runs/$plan_name}
    set -- "$AGGREGATOR" run --config "$RUNTIME/aggregator.yaml" --plan "$PLAN" --out "$OUT" "$@"
    if [ -n "${HEALTHFED_LINGER_S:-}" ]; then
        set -- "$@" --linger "$HEALTHFED_LINGER_S"
    fi
    if [ -n "${HEALTHFED_METRICS_PORT:-}" ]; then
        set -- "$@" --metrics-port "$HEALTHFED_METRICS_PORT" --metrics-address "${HEALTHFED_METRICS_ADDRESS:-0.0.0.0}"
    fi
    if [ -n "${HEALTHFED_LOG_FORMAT:-}" ]; then
        set -- "$@" --log-format "$HEALTHFED_LOG_FORMAT"
    fi
else
    set -- "$AGGREGATOR" "$@" --config "$RUNTIME/aggregator.yaml"
fi

if [ "$check_only" -eq 1 ]; then
    printf 'aggregator entrypoint: would exec:'
    printf ' %s' "$@"
    printf '\n'
    exit 0
fi
if [ "$serving" -eq 1 ]; then
    echo "$$" > "$RUNTIME/pid"   # exec keeps this pid: the health probe checks it
fi
exec "$@"

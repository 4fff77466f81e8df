#!/usr/bin/env bash
# Make sure a Docker engine answers on the default socket.
#
# Usage: ensure-docker.sh [STATE_DIR]
#   STATE_DIR defaults to $CODEYARD_STATE, then $CODEYARD_CACHE/state ($HOME/.cache/codeyard/state).
# If no engine answers, installs docker.io (apt) when dockerd is missing and starts
# dockerd in the background, logging to STATE_DIR/dockerd.log.
# Output: the last stdout line is the PID file path when this script started dockerd
# (STATE_DIR/dockerd.pid), or "already-running" when an engine was already up, so
# callers stop only what they started.
# Env: DOCKER_WAIT_SECONDS (default 60).
set -euo pipefail

STATE="${1:-${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}}"
WAIT="${DOCKER_WAIT_SECONDS:-60}"
DOCKER=/usr/bin/docker
log() { echo "[ensure-docker] $*" >&2; }

if [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
    log "Docker engine already answers; nothing to do."
    echo already-running
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || [ ! -x "$DOCKER" ]; then
    log "Installing docker.io (apt-get update + install, ~25 s)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq docker.io >&2
fi

mkdir -p "$STATE"
PIDFILE="$STATE/dockerd.pid"
LOGFILE="$STATE/dockerd.log"

# A dockerd we started earlier may still be starting up; don't start a second one.
# After a reboot the PID may belong to another process: check it is really dockerd.
if [ -s "$PIDFILE" ] && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" = dockerd ]; then
    log "dockerd (pid $(cat "$PIDFILE")) from an earlier run is alive; waiting for it."
else
    # Pid files left by an engine that was killed outright: with a reused pid in
    # containerd's, the new dockerd would wait for a containerd that is not there.
    "$(dirname "$0")/clear-stale-pidfiles.sh" \
        /var/run/docker.pid:dockerd /var/run/docker/containerd/containerd.pid:containerd
    log "Starting dockerd (log: $LOGFILE)..."
    # Own session: a Ctrl-C in the caller's terminal doesn't reach it; stop it by PID.
    setsid nohup dockerd >>"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
fi

for ((i = 0; i < WAIT * 5; i++)); do
    if "$DOCKER" info >/dev/null 2>&1; then
        log "Docker engine is ready (pid $(cat "$PIDFILE"))."
        echo "$PIDFILE"
        exit 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        log "ERROR: dockerd exited during start-up. Last log lines:"
        tail -n 20 "$LOGFILE" >&2
        exit 1
    fi
    sleep 0.2
done
log "ERROR: dockerd did not answer 'docker info' within ${WAIT}s. See $LOGFILE"
exit 1

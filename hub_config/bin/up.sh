#!/usr/bin/env bash
# Bring Codeyard up on this machine and run the Hub in the foreground (`make up`).
#
# Steps (each idempotent): Docker engine, single-user image, local proxy, secrets,
# model services (hooks), then the Hub with its logs on this terminal. The Hub registers
# this machine's engine as host "local" in the placement registry and runs the placement
# admin service (CODEYARD_HOST_PROVIDER=local: no registry).
# Ctrl-C stops exactly what this script started: the Hub (which stops its proxy), hook
# services, and dockerd if this script had to start it. Workspaces keep their files.
#
# Env: CODEYARD_STATE (default $CODEYARD_CACHE/state, i.e. ~/.cache/codeyard/state),
#      CODEYARD_ADMIN (default admin; registered only through the one-time link printed
#      below), CODEYARD_BIND_URL (default http://127.0.0.1:8000),
#      any other CODEYARD_* setting from hub_config/*_settings.py, and
#      CODEYARD_SITE_CONFIG for a site config file, CODEYARD_HOME_QUOTA (default 10G:
#      each workspace home is its own file system of that size, docs/home-quota.md; 0 = off).
#
# Hooks: every executable hub_config/up.d/*.sh runs before the Hub starts (vLLM and the
# model gateway go there). A hook starts its service in the background and prints
# "pid <PID>" lines for the processes it started; up.sh stops those on exit, in
# reverse order. Hooks see CODEYARD_STATE and must be idempotent; a background service
# must not keep the hook's stdout open (redirect it to a log file).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CODEYARD_STATE="${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}"
# A full home then fills its own preallocated image, never the disk the state is on.
export CODEYARD_HOME_QUOTA="${CODEYARD_HOME_QUOTA:-10G}"
VENV_BIN="${CODEYARD_VENV_BIN:-$REPO/.venv/bin}"
log() { echo "[up] $*" >&2; }

mkdir -p "$CODEYARD_STATE"
chmod 700 "$CODEYARD_STATE"

STARTED_PIDS=()   # what we started, stopped in reverse order on exit
DOCKERD_PIDFILE=""
HUB_PID=""
PROXY_PID_COPY="$CODEYARD_STATE/up-proxy.pid"
PROXY_PID_COPIER=""

cleanup() {
    trap - INT TERM EXIT
    # The Hub signals its proxy on the way out but does not wait for it, and removes its
    # pid file first (Ctrl-C reaches the Hub too, so maybe before this line): the pid comes
    # from our copy, else from the Hub's file if this Hub wrote it, and we wait for it below,
    # so that when this script returns nothing it started still listens.
    [ -n "$PROXY_PID_COPIER" ] && { kill "$PROXY_PID_COPIER" 2>/dev/null || true; }
    proxy_pid="$(cat "$PROXY_PID_COPY" 2>/dev/null || true)"
    if [ -z "$proxy_pid" ] && [ -e "$PROXY_PID_COPY.start" ] &&
        [ "$CODEYARD_STATE/proxy.pid" -nt "$PROXY_PID_COPY.start" ]; then
        proxy_pid="$(cat "$CODEYARD_STATE/proxy.pid" 2>/dev/null || true)"
    fi
    rm -f "$PROXY_PID_COPY" "$PROXY_PID_COPY.start"
    if [ -n "$HUB_PID" ] && kill -0 "$HUB_PID" 2>/dev/null; then
        log "stopping the Hub (pid $HUB_PID)..."
        kill -TERM "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [ -n "$proxy_pid" ] && grep -qa configurable-http-proxy "/proc/$proxy_pid/cmdline" 2>/dev/null; then
        # Gone, or a zombie (stopped; its new parent, init, reaps it).
        for _ in $(seq 50); do
            grep -q '^State:[[:space:]]*[^Z]' "/proc/$proxy_pid/status" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$proxy_pid" 2>/dev/null || true
    fi
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${STARTED_PIDS[$i]}"
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping pid $pid..."
            kill -TERM "$pid" 2>/dev/null || true
            # Not our child, so no `wait`: give it time to stop its own children (vLLM).
            for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
    done
    if [ -n "$DOCKERD_PIDFILE" ] && [ -s "$DOCKERD_PIDFILE" ]; then
        pid="$(cat "$DOCKERD_PIDFILE")"
        log "stopping dockerd (pid $pid), which this script started..."
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        rm -f "$DOCKERD_PIDFILE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Docker engine.
out="$("$REPO/images/bin/ensure-docker.sh" "$CODEYARD_STATE" | tail -n 1)"
[ "$out" != already-running ] && DOCKERD_PIDFILE="$out"

# 2. The single-user image (rebuilt only when its inputs change).
IMAGE="$("$REPO/images/bin/build-images.sh" | tail -n 1)"
export CODEYARD_IMAGE="${CODEYARD_IMAGE:-$IMAGE}"
log "single-user image: $CODEYARD_IMAGE"

# 3. configurable-http-proxy in a project-local folder.
PROXY="$("$HERE/install-proxy.sh" | tail -n 1)"
export CODEYARD_PROXY_DIR="${CODEYARD_PROXY_DIR:-$(dirname "$(dirname "$(dirname "$PROXY")")")}"

# 4. Secrets: made once, mode 0600, in the state folder; with Codeyard's sign-up also the
#    one-time admin bootstrap secret, whose sign-up link is printed below (empty once used).
"$VENV_BIN/python" "$HERE/../hub_secrets.py" >/dev/null
BOOTSTRAP_URL="$("$VENV_BIN/python" "$HERE/../login_setup.py")"

# 5. Model services (vLLM, gateway): hooks in hub_config/up.d/.
if [ -d "$HERE/../up.d" ]; then
    for hook in "$HERE"/../up.d/*.sh; do
        [ -x "$hook" ] || continue
        log "hook $(basename "$hook")"
        while read -r word pid; do
            [ "$word" = pid ] && STARTED_PIDS+=("$pid")
        done < <("$hook")
    done
fi

# 6. The Hub, in the foreground.
ADMIN="${CODEYARD_ADMIN:-admin}"
URL="${CODEYARD_BIND_URL:-http://127.0.0.1:8000}"
if [ -n "$BOOTSTRAP_URL" ]; then
    ADMIN_MSG="To become admin: open this one-time link and sign up as \"$ADMIN\":
      $BOOTSTRAP_URL
  (change the name with CODEYARD_ADMIN). Nobody can sign up under that name without the
  link, and it works once. Others sign up at $URL/hub/signup."
else
    ADMIN_MSG="Admins log in at $URL/hub/login (the admin account is registered, or the site
  config's authenticator decides who is admin). Others sign up at $URL/hub/signup."
fi
cat >&2 <<MSG

  Codeyard is starting on $URL
  $ADMIN_MSG
  Docker hosts and placement (admins): $URL/services/codeyard-placement/
  (this machine's engine is registered there as "local"; add more hosts there).
  State (database, secrets, homes): $CODEYARD_STATE
  Stop with Ctrl-C.

MSG
cd "$CODEYARD_STATE"
touch "$PROXY_PID_COPY.start"
"$VENV_BIN/jupyterhub" -f "$REPO/hub_config/jupyterhub_config.py" &
HUB_PID=$!
# Copy the proxy's pid once this Hub has written it (newer than the marker: a pid file left
# by an earlier run is the Hub's to deal with, not ours to wait for).
(
    for _ in $(seq 1200); do
        if [ "$CODEYARD_STATE/proxy.pid" -nt "$PROXY_PID_COPY.start" ]; then
            cp "$CODEYARD_STATE/proxy.pid" "$PROXY_PID_COPY" && break
        fi
        sleep 0.5
    done
) &
PROXY_PID_COPIER=$!
wait "$HUB_PID"

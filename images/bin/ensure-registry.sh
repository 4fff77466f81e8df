#!/usr/bin/env bash
# Start Codeyard's private image registry on this (the Hub's) machine, or reuse the running one.
#
# Usage: ensure-registry.sh            start (idempotent) and trust it
#        ensure-registry.sh --untrust  remove the trust entries this script wrote
#        ensure-registry.sh --stop     stop the registry this script started, then --untrust
#
# The registry is Debian's `docker-registry` (the CNCF distribution registry; installed with
# apt when missing), serving TLS with a certificate signed by a CA made once in
# $CODEYARD_STATE/registry/ (ca.crt, ca.key, server.crt, server.key; keys mode 0600). Images
# are stored under $CODEYARD_STATE/registry/data, so they survive restarts.
#
# Trust: every Docker engine on a machine reads /etc/docker/certs.d/<host:port>/ca.crt, so
# writing it there makes *every* engine of this machine trust the registry, namespace test
# engines included. The files written are listed in $CODEYARD_STATE/registry/trusted, and
# --untrust removes exactly those (when they still hold our CA). Another machine's engine
# trusts it once its admin copies ca.crt to the same path there (docs/multi-machine.md).
#
# Env: CODEYARD_STATE           state folder (default $CODEYARD_CACHE/state)
#      CODEYARD_REGISTRY_HOST   the address hosts reach it at (default: this machine's source
#                               address of its default route, else its first address)
#      CODEYARD_REGISTRY_PORT   port (default 5000)
#      CODEYARD_REGISTRY_LISTEN listen address (default: CODEYARD_REGISTRY_HOST; 0.0.0.0
#                               serves every interface)
#      CODEYARD_REGISTRY_USER / CODEYARD_REGISTRY_PASSWORD  optional: require this login
#                               (htpasswd, bcrypt); both or neither
#      REGISTRY_WAIT_SECONDS    start-up wait (default 30)
# Output: the last stdout line is "pid <PID> <host:port>" when this script started the
# registry, "running <host:port>" when it was already up. The address is also written to
# $CODEYARD_STATE/registry/address, which the Hub's settings read.
set -euo pipefail

STATE="${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}"
DIR="$STATE/registry"
CERTS_D="${DOCKER_CERTS_D:-/etc/docker/certs.d}"
WAIT="${REGISTRY_WAIT_SECONDS:-30}"
log() { echo "[ensure-registry] $*" >&2; }

untrust() {
    local list="$DIR/trusted" path
    [ -s "$list" ] || { log "nothing to untrust"; return 0; }
    while read -r path; do
        [ -n "$path" ] || continue
        if [ -f "$path" ] && cmp -s "$path" "$DIR/ca.crt"; then
            rm -f "$path"
            rmdir "$(dirname "$path")" 2>/dev/null || true
            log "removed $path"
        elif [ -e "$path" ]; then
            log "left $path: it no longer holds this registry's CA"
        fi
    done <"$list"
    rm -f "$list"
}

stop_registry() {
    if [ -s "$DIR/registry.pid" ]; then
        local pid
        pid="$(cat "$DIR/registry.pid")"
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = docker-registry ]; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            log "stopped the registry (pid $pid)"
        fi
        rm -f "$DIR/registry.pid"
    fi
}

case "${1:-}" in
--untrust) untrust; exit 0 ;;
--stop) stop_registry; untrust; exit 0 ;;
"") ;;
*) echo "usage: ensure-registry.sh [--untrust|--stop]" >&2; exit 2 ;;
esac

default_host() {
    local src
    src="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)"
    [ -n "$src" ] || src="$(hostname -I 2>/dev/null | awk '{print $1}')"
    echo "${src:-127.0.0.1}"
}
HOST="${CODEYARD_REGISTRY_HOST:-$(default_host)}"
PORT="${CODEYARD_REGISTRY_PORT:-5000}"
LISTEN="${CODEYARD_REGISTRY_LISTEN:-$HOST}"
ADDRESS="$HOST:$PORT"
USER_NAME="${CODEYARD_REGISTRY_USER:-}"
PASSWORD="${CODEYARD_REGISTRY_PASSWORD:-}"
if { [ -n "$USER_NAME" ] && [ -z "$PASSWORD" ]; } || { [ -z "$USER_NAME" ] && [ -n "$PASSWORD" ]; }; then
    log "ERROR: set both CODEYARD_REGISTRY_USER and CODEYARD_REGISTRY_PASSWORD, or neither"
    exit 1
fi

if ! command -v docker-registry >/dev/null 2>&1; then
    log "Installing docker-registry (apt)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq docker-registry >&2 || { apt-get update -qq >&2 && apt-get install -y -qq docker-registry >&2; }
fi
if [ -n "$USER_NAME" ] && ! command -v htpasswd >/dev/null 2>&1; then
    log "Installing apache2-utils for htpasswd (apt)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >&2
fi

mkdir -p "$DIR/data"
chmod 700 "$DIR"
umask 077

# --- CA and server certificate --------------------------------------------------------
if [ ! -s "$DIR/ca.crt" ] || [ ! -s "$DIR/ca.key" ]; then
    log "Making the registry CA in $DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Codeyard registry CA $(hostname)" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    rm -f "$DIR/server.crt"
fi
SANS="IP:$HOST,IP:127.0.0.1,DNS:localhost,DNS:$(hostname)"
case "$HOST" in *[!0-9.]*) SANS="DNS:$HOST,IP:127.0.0.1,DNS:localhost" ;; esac
if [ ! -s "$DIR/server.crt" ] || [ "$(cat "$DIR/server.sans" 2>/dev/null)" != "$SANS" ]; then
    log "Making the server certificate for $SANS"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
        -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$SANS" \
        >"$DIR/server.ext"
    openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
        -CAcreateserial -days 825 -extfile "$DIR/server.ext" -out "$DIR/server.crt" 2>/dev/null
    rm -f "$DIR/server.csr"
    echo "$SANS" >"$DIR/server.sans"
fi
chmod 644 "$DIR/ca.crt" "$DIR/server.crt"

# --- config ---------------------------------------------------------------------------
AUTH=""
if [ -n "$USER_NAME" ]; then
    htpasswd -Bbc "$DIR/htpasswd" "$USER_NAME" "$PASSWORD" 2>/dev/null
    AUTH="auth:
  htpasswd:
    realm: codeyard-registry
    path: $DIR/htpasswd"
else
    rm -f "$DIR/htpasswd"
fi
[ -s "$DIR/http.secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/http.secret"
cat >"$DIR/config.yml.new" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $LISTEN:$PORT
  secret: $(cat "$DIR/http.secret")
  tls:
    certificate: $DIR/server.crt
    key: $DIR/server.key
$AUTH
YAML
changed=1
cmp -s "$DIR/config.yml.new" "$DIR/config.yml" && changed=0
mv "$DIR/config.yml.new" "$DIR/config.yml"

# --- trust (reversible) ---------------------------------------------------------------
trust() {
    local target="$CERTS_D/$1/ca.crt"
    mkdir -p "$(dirname "$target")"
    if ! cmp -s "$DIR/ca.crt" "$target"; then
        install -m 0644 "$DIR/ca.crt" "$target"
        log "trusted: $target (undo with ensure-registry.sh --untrust)"
    fi
    grep -qxF "$target" "$DIR/trusted" 2>/dev/null || echo "$target" >>"$DIR/trusted"
}
trust "$ADDRESS"
echo "$ADDRESS" >"$DIR/address"

# --- start or reuse -------------------------------------------------------------------
answers() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$DIR/ca.crt" \
        "https://$ADDRESS/v2/" 2>/dev/null || true)"
    [ "$code" = 200 ] || [ "$code" = 401 ]
}
pid=""
if [ -s "$DIR/registry.pid" ] && [ "$(cat "/proc/$(cat "$DIR/registry.pid")/comm" 2>/dev/null)" = docker-registry ]; then
    pid="$(cat "$DIR/registry.pid")"
    if [ "$changed" = 1 ]; then
        log "configuration changed: restarting the registry (pid $pid)"
        stop_registry
        pid=""
    fi
fi
if [ -n "$pid" ] && answers; then
    log "registry already runs on $ADDRESS (pid $pid)"
    echo "running $ADDRESS"
    exit 0
fi
if [ -z "$pid" ]; then
    log "Starting the registry on $LISTEN:$PORT (log: $DIR/registry.log)"
    setsid nohup docker-registry serve "$DIR/config.yml" >>"$DIR/registry.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DIR/registry.pid"
fi
for ((i = 0; i < WAIT * 5; i++)); do
    if answers; then
        log "registry answers on https://$ADDRESS (pid $pid)"
        echo "pid $pid $ADDRESS"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        log "ERROR: the registry exited during start-up. Last log lines:"
        tail -n 20 "$DIR/registry.log" >&2
        rm -f "$DIR/registry.pid"
        exit 1
    fi
    sleep 0.2
done
log "ERROR: the registry did not answer on https://$ADDRESS within ${WAIT}s; see $DIR/registry.log"
exit 1

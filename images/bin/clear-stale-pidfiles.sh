#!/usr/bin/env bash
# Remove pid files whose process is gone or is no longer the program named.
#
# Usage: clear-stale-pidfiles.sh FILE:COMM [FILE:COMM ...]
#   COMM is the process name as /proc/PID/comm shows it (dockerd, containerd).
# A dockerd or containerd that was killed outright, not shut down, leaves its pid file
# behind. Once the kernel hands that pid to another process, the next dockerd believes
# containerd still runs, waits for its socket and gives up ("timeout waiting for containerd
# to start"). A file whose process really is the program named is left alone.
# Prints one line per removed file on stderr; exits 0 unless an argument is malformed.
set -euo pipefail

for spec in "$@"; do  # every argument is checked before any file is touched
    file="${spec%:*}"
    comm="${spec##*:}"
    if [ -z "$file" ] || [ -z "$comm" ] || [ "$file" = "$spec" ]; then
        echo "[clear-stale-pidfiles] ERROR: expected FILE:COMM, got '$spec'" >&2
        exit 2
    fi
done

for spec in "$@"; do
    file="${spec%:*}"
    comm="${spec##*:}"
    [ -e "$file" ] || continue
    pid="$(tr -d '[:space:]' <"$file" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
        continue
    fi
    echo "[clear-stale-pidfiles] removing $file: pid '${pid}' is not a running $comm" >&2
    rm -f "$file"
done

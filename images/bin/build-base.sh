#!/usr/bin/env bash
# Build an offline Debian base image with debootstrap and import it into Docker.
#
# Usage: build-base.sh
# Env:   CODEYARD_CACHE   cache dir for the rootfs tarball (default $HOME/.cache/codeyard)
#        DEBIAN_MIRROR    override the mirror (default: read from the host's apt sources)
#        DEBIAN_SUITE     default bookworm
# Output: the last stdout line is the image tag, codeyard/base:<suite>-<hash>, where the
# hash covers this script, the mirror and the suite. Skips all work when the tag exists;
# reuses the cached tarball when only the image is missing (e.g. a fresh dockerd).
set -euo pipefail

DOCKER=/usr/bin/docker
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${CODEYARD_CACHE:-$HOME/.cache/codeyard}"
log() { echo "[build-base] $*" >&2; }

host_mirror() {
    # deb822 .sources: first "URIs:" of a stanza whose Suites include $SUITE exactly.
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$SUITE" '
            /^[[:space:]]*$/ { if (u != "" && ok) { print u; u = ""; exit } u = ""; ok = 0; next }
            /^URIs:/   { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
            END        { if (u != "" && ok) print u }' "$f"
    done
    # one-line format: deb [opts] URL SUITE components
    if [ -f /etc/apt/sources.list ]; then
        sed -E 's/\[[^]]*\]//' /etc/apt/sources.list |
            awk -v s="$SUITE" '$1 == "deb" && $3 == s { print $2 }'
    fi
}

MIRROR="${DEBIAN_MIRROR:-$(host_mirror | head -n 1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
HASH="$( { cat "$0"; echo "$MIRROR $SUITE"; } | sha256sum | cut -c1-12)"
TAG="codeyard/base:$SUITE-$HASH"

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists; skipping."
    echo "$TAG"
    exit 0
fi

mkdir -p "$CACHE"
TARBALL="$CACHE/base-$SUITE-$HASH.tar"
if [ ! -s "$TARBALL" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "Installing debootstrap..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq debootstrap >&2
    fi
    ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS"' EXIT
    log "debootstrap --variant=minbase $SUITE from $MIRROR (~45 s)..."
    debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >&2
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    # Keep the image's apt pointed at the same mirror.
    echo "deb $MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"
    tar -C "$ROOTFS" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    log "Cached rootfs at $TARBALL ($(du -h "$TARBALL" | cut -f1))."
else
    log "Using cached rootfs $TARBALL."
fi

log "Importing as $TAG..."
"$DOCKER" import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$TARBALL" "$TAG" >&2
echo "$TAG"

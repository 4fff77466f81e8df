#!/usr/bin/env bash
# up.sh hook: the image registry every Docker host pulls the workspace image from.
#
# CODEYARD_REGISTRY unset: starts the embedded registry on this machine
# (images/bin/ensure-registry.sh: Debian's docker-registry, TLS with a CA in
# $CODEYARD_STATE/registry/, trusted through /etc/docker/certs.d; undo with
# `images/bin/ensure-registry.sh --untrust`) and prints "pid <PID>" when it started it, so
# up.sh stops it on exit. CODEYARD_REGISTRY=host:port: the site's own registry, nothing is
# started (its login: CODEYARD_REGISTRY_USER / CODEYARD_REGISTRY_PASSWORD).
# CODEYARD_REGISTRY=none: no registry; hosts get the image streamed over their engine API.
# Either way the single-user image is pushed (images/bin/push-image.sh; skipped when the
# registry holds that tag already). The Hub reads the address from CODEYARD_REGISTRY, else
# from $CODEYARD_STATE/registry/address (c.ImageDistribution.registry).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$HERE/../../images/bin"
say() { echo "[up] $*" >&2; }

if [ "${CODEYARD_REGISTRY:-}" = none ]; then
    say "no image registry (CODEYARD_REGISTRY=none): hosts get the image over their engine API"
    rm -f "$CODEYARD_STATE/registry/address"
    exit 0
fi
if [ -z "${CODEYARD_REGISTRY:-}" ]; then
    out="$("$BIN/ensure-registry.sh" | tail -n 1)"
    set -- $out
    if [ "$1" = pid ]; then
        echo "pid $2"
    fi
    say "image registry: ${!#} (CA: $CODEYARD_STATE/registry/ca.crt)"
else
    say "site image registry: $CODEYARD_REGISTRY"
fi
"$BIN/push-image.sh" "${CODEYARD_IMAGE:-}" >/dev/null

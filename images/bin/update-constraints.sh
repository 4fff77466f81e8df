#!/usr/bin/env bash
# Refresh images/singleuser/constraints.txt: build once without pins (newest versions that
# satisfy the Dockerfile), then freeze that image. Review the diff before committing.
# Usage: update-constraints.sh    (same env as build-images.sh)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/../singleuser/constraints.txt"
cp "$OUT" "$OUT.bak"
trap 'if [ -f "$OUT.bak" ]; then mv "$OUT.bak" "$OUT"; fi' EXIT
: >"$OUT"
TAG="$("$HERE/build-images.sh" | tail -n 1)"
{
    echo "# Known-good versions for the single-user image (pip constraints; pip freeze --all of a"
    echo "# working build). Regenerate with images/bin/update-constraints.sh."
    /usr/bin/docker run --rm --entrypoint pip "$TAG" freeze --all --exclude codeyard
} >"$OUT.new"
mv "$OUT.new" "$OUT"
rm -f "$OUT.bak"
echo "[update-constraints] Wrote $OUT from $TAG; rebuild with build-images.sh." >&2

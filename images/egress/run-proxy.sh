#!/bin/sh
# Start squid in the foreground with the configuration the Hub passed in
# $CODEYARD_SQUID_CONF (codeyard.spawner.egress renders it), on a read-only root: every
# file squid writes goes to /tmp, a tmpfs.
set -eu
mkdir -p /tmp/squid
printf '%s\n' "$CODEYARD_SQUID_CONF" >/tmp/squid/squid.conf
exec /usr/sbin/squid -N -d 1 -f /tmp/squid/squid.conf

"""A git credential helper that asks the Hub for the workspace's stored credential.

git runs it for each pull or push of the git endpoints (`GitManager.remote_access` names it
with `-c credential.helper=...` on that one command line), as
`python -I .../credential_helper.py get` with git's request (`protocol=`, `host=`, ...) on
stdin. It asks the Hub (`GET {JUPYTERHUB_API_URL}/codeyard/workspaces/<user>/<server>/
git-credential`) with the server's own token and prints `username=` and `password=` for
git, which uses them for that one connection. So the credential is never written into the
workspace: not to `.git/config`, not to a file, not to an environment variable; the Hub
hands it out fresh each time, logs each hand-out, and only to this server's token, only for
the repository's own host.

Only the standard library: git starts it with `-I` (no PYTHONPATH, no user site), by file
path, so it runs the same in any environment the server runs in.

`store` and `erase` are read and ignored: nothing is kept. Every failure ends quietly with
nothing printed on stdout (git then fails as it would without a credential); one line on
stderr, starting with `MARK`, says what happened, so the server can word its error (git's
own output is never shown, since it may hold the remote's URL).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import IO

#: The variable that carries the server's Hub token to this helper, set only on the git
#: commands that talk to a remote (the server's own JUPYTERHUB_API_TOKEN is kept from git).
TOKEN_ENV = "CODEYARD_GIT_HUB_TOKEN"  # noqa: S105 - a variable name, not a secret
#: The Hub variables the helper reads besides the token.
HUB_ENV = ("JUPYTERHUB_API_URL", "JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME")
#: Starts the one stderr line that tells the server what the helper did.
MARK = "codeyard-credential:"
#: What the helper reports after `MARK`.
GIVEN, NONE_STORED, REFUSED, DENIED, HUB_FAILED = (
    "given",
    "none-stored",
    "refused",  # stored, but not for this host
    "denied",  # the Hub did not take this server's token
    "hub-failed",
)
#: What the Hub's 403 says when the host is not the repository's (versus a token refused).
HOST_REFUSAL = "only for its repository's host"
TIMEOUT = 20.0
MAX_LINE = 65536


def read_request(stream: IO[str]) -> dict[str, str]:
    """git's `key=value` lines up to a blank line or the end (the credential protocol)."""
    request: dict[str, str] = {}
    for line in stream:
        line = line.rstrip("\n")
        if not line:
            break
        key, sep, value = line[:MAX_LINE].partition("=")
        if sep:
            request[key] = value
    return request


def fill_url(env: Mapping[str, str], protocol: str, host: str) -> str:
    """The Hub URL that answers this workspace's credential for `protocol://host`."""
    api = env["JUPYTERHUB_API_URL"].rstrip("/")
    user = urllib.parse.quote(env["JUPYTERHUB_USER"], safe="")
    server = urllib.parse.quote(env.get("JUPYTERHUB_SERVER_NAME", ""), safe="")
    query = urllib.parse.urlencode({"protocol": protocol, "host": host})
    return f"{api}/codeyard/workspaces/{user}/{server}/git-credential?{query}"


def ask_hub(env: Mapping[str, str], protocol: str, host: str) -> tuple[str, dict[str, str]]:
    """(what happened, the credential or {}) from the Hub. Never through a proxy: the Hub is
    reached the way the server itself reaches it."""
    url = fill_url(env, protocol, host)
    if not url.lower().startswith(("http://", "https://")):
        return HUB_FAILED, {}
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        headers={"Authorization": f"token {env[TOKEN_ENV]}", "Accept": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as answer:
            body = json.loads(answer.read(MAX_LINE))
    except urllib.error.HTTPError as e:
        try:
            said = e.read(MAX_LINE).decode("utf-8", "replace")
        finally:
            e.close()
        if e.code == 404:
            return NONE_STORED, {}
        if e.code == 403:
            return (REFUSED if HOST_REFUSAL in said else DENIED), {}
        return HUB_FAILED, {}
    except (OSError, ValueError):
        return HUB_FAILED, {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not password:
        return HUB_FAILED, {}
    # The protocol is line-based: a line break would let a value add attributes.
    if any(c in value for value in (username, password) for c in "\r\n\0"):
        return HUB_FAILED, {}
    return GIVEN, {"username": username, "password": password}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    request = read_request(sys.stdin)
    if not args or args[0] != "get":
        return 0
    protocol, host = request.get("protocol", ""), request.get("host", "")
    if protocol not in ("https", "http") or not host:
        return 0
    if not env.get(TOKEN_ENV) or not all(env.get(k) for k in HUB_ENV[:2]):
        print(f"{MARK} {HUB_FAILED} (not running under a Hub)", file=sys.stderr)
        return 0
    outcome, credential = ask_hub(env, protocol, host)
    print(f"{MARK} {outcome}", file=sys.stderr)
    if credential:
        sys.stdout.write(f"username={credential['username']}\npassword={credential['password']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

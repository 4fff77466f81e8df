"""What a user may ask for when creating a workspace: size profile, image key, git source.

The spawn form and the REST API (`POST /hub/api/users/:name/servers/:server` with a JSON
body) both end in `user_options`; `WorkspaceOptions.parse` is the one place that checks
them, so the API cannot ask for more than the form offers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from jupyterhub.traitlets import ByteSpecification

# A branch or tag name that git accepts and that cannot be read as an option.
_BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/+-]{1,200}(?<![./])$")
# scp-like ssh syntax: user@host:path
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")


class InvalidOptions(ValueError):
    """The user asked for something the admin does not offer; the message says what."""


@dataclass(frozen=True)
class SizeProfile:
    """A named size: CPU cores and a memory limit (`"2G"`, bytes as int also accepted)."""

    name: str
    display_name: str
    cpu: float
    mem: str

    @property
    def mem_bytes(self) -> int:
        return int(ByteSpecification().validate(None, self.mem))

    @classmethod
    def from_config(cls, name: str, spec: dict[str, Any]) -> SizeProfile:
        unknown = set(spec) - {"display_name", "cpu", "mem"}
        if unknown:
            raise ValueError(f"profile {name!r}: unknown keys {sorted(unknown)}")
        try:
            cpu = float(spec["cpu"])
            mem = str(spec["mem"])
        except KeyError as e:
            raise ValueError(f"profile {name!r} needs {e.args[0]!r}") from None
        if cpu <= 0:
            raise ValueError(f"profile {name!r}: cpu must be positive")
        profile = cls(name, str(spec.get("display_name") or name), cpu, mem)
        try:
            profile.mem_bytes  # noqa: B018 - validates the memory string
        except Exception as e:
            raise ValueError(f"profile {name!r}: bad mem {mem!r}: {e}") from None
        return profile


# git's `<transport>::<address>` syntax (`ext::sh -c ...`, `fd::3`): runs a remote helper.
_TRANSPORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
# Schemes whose URLs can carry a password or token in their user part.
_HTTP_SCHEMES = {"http", "https"}


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in text)


def check_git_url(url: str, allowed_schemes: set[str]) -> str:
    """Accept `scheme://...` with an allowed scheme, or scp-like `git@host:path` for ssh.

    git hands the host of an ssh URL to `ssh` as an argument and the path to the remote
    shell, so a host, user or path that starts with `-` (`ssh://-oProxyCommand=...`)
    would be read as an option; it is refused, also when percent-encoded (git decodes ssh
    URLs). A password or token in the URL would end up in `user_options`, the status API,
    the spawn log and the clone's `.git/config`: it is refused with a pointer to the
    credential field, whose secret reaches git only through a credential helper.
    `ext::`/`fd::` transports run programs; `file://` reads the helper's own disk: both only
    when the admin lists the scheme in `git_schemes`.
    """
    url = url.strip()
    if not url:
        return ""
    if url.startswith("-") or _has_control(url):
        raise InvalidOptions("The git URL may not start with '-' or contain spaces.")
    transport = _TRANSPORT_RE.match(url)
    if transport and transport.group(0)[:-2].lower() not in allowed_schemes:
        raise InvalidOptions(
            f"Unsupported git URL: git's {transport.group(0)!r} transport runs programs"
            " and is not allowed here."
        )
    if _SCP_RE.match(url) and "://" not in url:
        if "ssh" not in allowed_schemes:
            raise InvalidOptions("ssh git URLs are not allowed here.")
        host_path = url.split("@", 1)[1]
        if host_path.split(":", 1)[1].startswith("-"):
            raise InvalidOptions("The path of a git URL may not start with '-'.")
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in allowed_schemes or not (parts.netloc or scheme == "file"):
        raise InvalidOptions(
            f"Unsupported git URL {url!r}; use one of: "
            + ", ".join(f"{s}://" for s in sorted(allowed_schemes))
        )
    if parts.password is not None or (scheme in _HTTP_SCHEMES and parts.username is not None):
        raise InvalidOptions(
            "The git URL may not contain a user name, password or token: give the URL"
            " without them and put the credential in the Credential field."
        )
    decoded = {
        "host": unquote(parts.hostname or ""),
        "user": unquote(parts.username or ""),
        "path": unquote(parts.path).lstrip("/"),
    }
    for what, value in decoded.items():
        if value.startswith("-"):
            raise InvalidOptions(f"The {what} of a git URL may not start with '-'.")
        if _has_control(value):
            raise InvalidOptions(f"The {what} of a git URL may not contain control characters.")
    return url


def git_host(url: str) -> str:
    """The `host` (with a port if the URL has one) that git names to a credential helper."""
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return parts.netloc.rsplit("@", 1)[-1]
    return ""


def check_branch(branch: str) -> str:
    branch = branch.strip()
    if branch and not _BRANCH_RE.match(branch):
        raise InvalidOptions(f"Not a valid branch name: {branch!r}")
    return branch


@dataclass(frozen=True)
class WorkspaceOptions:
    """Validated `user_options` of a workspace."""

    profile: SizeProfile
    image_key: str
    repo_url: str = ""
    branch: str = ""

    def to_user_options(self) -> dict[str, str]:
        opts = {"profile": self.profile.name, "image": self.image_key}
        if self.repo_url:
            opts["repo_url"] = self.repo_url
            if self.branch:
                opts["branch"] = self.branch
        return opts

    @classmethod
    def parse(
        cls,
        user_options: dict[str, Any],
        *,
        profiles: dict[str, SizeProfile],
        default_profile: str,
        images: dict[str, str],
        default_image: str,
        git_schemes: set[str],
    ) -> WorkspaceOptions:
        known = {"profile", "image", "repo_url", "branch"}
        unknown = set(user_options) - known
        if unknown:
            raise InvalidOptions(f"Unknown workspace options: {', '.join(sorted(unknown))}")
        profile_name = str(user_options.get("profile") or default_profile)
        if profile_name not in profiles:
            raise InvalidOptions(
                f"Unknown size profile {profile_name!r}; choose one of {', '.join(profiles)}"
            )
        image_key = str(user_options.get("image") or default_image)
        if image_key not in images:
            raise InvalidOptions(f"Image {image_key!r} is not offered here.")
        repo_url = check_git_url(str(user_options.get("repo_url") or ""), git_schemes)
        branch = check_branch(str(user_options.get("branch") or ""))
        if branch and not repo_url:
            raise InvalidOptions("A branch needs a git URL.")
        return cls(profiles[profile_name], image_key, repo_url, branch)

"""NativeAuthenticator as Codeyard runs it: admin names only through the bootstrap secret,
failed logins throttled per name, bcrypt off the event loop.

Selected by default in hub_config/jupyterhub_config.py as
`codeyard.hubauth.native.CodeyardNativeAuthenticator`. Everything else NativeAuthenticator
does (approval, open sign-up, password rules, 2FA, self-approval e-mail) is inherited and
configured in its own `c.NativeAuthenticator` section, which this class reads too.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Integer, Unicode, default

from codeyard.hubauth.bootstrap import AdminBootstrap
from codeyard.hubauth.passwords import MAX_PASSWORD_BYTES, PasswordHasher

# Failed-login records kept before stale ones are dropped: records are kept for unknown
# names too (so a lock does not reveal which names exist), and this bounds what a client
# spraying random names can make the Hub remember.
MAX_LOGIN_RECORDS = 10_000

NAME_TAKEN = (
    "Something went wrong!\nIt appears that this username is already in use. Please try"
    " again with a different username."
)
LINK_INVALID = (
    "This admin sign-up link is not valid or was already used. An admin account is"
    " registered once, with the link `make up` printed on the first start."
)
PASSWORD_TOO_LONG = f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes long."


def admin_name_refusal(username: str) -> str:
    """Why a plain sign-up under an admin name is refused, and what to do instead."""
    return (
        f'"{username}" is an admin name. It can only be registered through the one-time admin'
        " sign-up link that `make up` printed on the first start (its secret is the file"
        " admin_bootstrap in the Hub's state folder). Please sign up under another name."
    )


@dataclass
class SignUpResult:
    """The account made (None if none), and why not when the reason is Codeyard's own (None:
    NativeAuthenticator's usual messages apply)."""

    user: UserInfo | None
    refusal: str | None = None


class CodeyardNativeAuthenticator(NativeAuthenticator):  # type: ignore[misc]
    """NativeAuthenticator whose admin names need the bootstrap secret, whose login lock
    works and tells the user, and whose bcrypt runs in a thread pool."""

    admin_bootstrap_file = Unicode(
        "",
        help="""File holding the one-time admin bootstrap secret (mode 0600); a sign-up under
        an admin name (`Authenticator.admin_users`) must carry it as `?bootstrap=<secret>`,
        and consumes it. The Hub config makes it in the state folder. Empty: admin names
        cannot be registered by sign-up at all.""",
    ).tag(config=True)

    password_hash_threads = Integer(
        help="""Threads that run bcrypt for sign-ups and logins, beside the event loop.
        Logins beyond this many wait their turn rather than take every core from the Hub.
        Default: one less than the CPU count, at least 1, at most 4.""",
    ).tag(config=True)

    @default("password_hash_threads")
    def _default_password_hash_threads(self) -> int:
        return max(1, min(4, (os.cpu_count() or 2) - 1))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hasher = PasswordHasher(self.password_hash_threads)
        self.bootstrap = (
            AdminBootstrap(self.admin_bootstrap_file) if self.admin_bootstrap_file else None
        )
        if self.bootstrap is not None and not self.bootstrap.used:
            if self.admin_users and all(self.user_exists(name) for name in self.admin_users):
                self.bootstrap.retire("every admin name already has an account")
            elif self.bootstrap.secret():
                self.log.info(
                    "No admin account yet: register one with the sign-up link carrying the"
                    " secret in %s (`make up` prints it).",
                    self.bootstrap.path,
                )

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        from codeyard.hubauth.handlers import CodeyardLoginHandler, CodeyardSignUpHandler

        replaced = {r"/login": CodeyardLoginHandler, r"/signup": CodeyardSignUpHandler}
        return [(path, replaced.get(path, h)) for path, h in super().get_handlers(app)]

    # ---- admin names --------------------------------------------------------------------

    def is_admin_name(self, username: str) -> bool:
        return self.normalize_username(username) in self.admin_users

    def bootstrap_valid(self, secret: str) -> bool:
        """Whether `secret` is the waiting admin bootstrap secret."""
        return self.bootstrap is not None and self.bootstrap.matches(secret)

    def signup_refusal(self, username: str, bootstrap: str = "") -> str | None:
        """Why this sign-up is refused before anything else is checked, or None.

        Admin names need the bootstrap secret; with any other name a valid secret changes
        nothing. A wrong secret is reported as such, so a mistyped link is not mistaken for a
        problem with the name.
        """
        if bootstrap and not self.bootstrap_valid(bootstrap):
            return LINK_INVALID
        if self.is_admin_name(username) and not bootstrap:
            return admin_name_refusal(self.normalize_username(username))
        return None

    def create_user(self, username: str, password: str, **kwargs: Any) -> UserInfo | None:
        """NativeAuthenticator's synchronous path (used by its FirstUse import) never makes an
        admin name: those go through `sign_up` with the bootstrap secret."""
        if self.is_admin_name(username):
            self.log.warning("Not creating admin name %s without the bootstrap secret", username)
            return None
        return super().create_user(username, password, **kwargs)

    async def sign_up(
        self, username: str, password: str, bootstrap: str = "", **infos: Any
    ) -> SignUpResult:
        """NativeAuthenticator's `create_user` with the bcrypt hash made in the thread pool,
        and admin names registered only with (and consuming) the bootstrap secret."""
        username = self.normalize_username(username)
        refusal = self.signup_refusal(username, bootstrap)
        if refusal:
            return SignUpResult(None, refusal)
        if not self.hasher.fits(password):
            return SignUpResult(None, PASSWORD_TOO_LONG)
        if (
            not self.enable_signup
            or self.user_exists(username)
            or not self.validate_username(username)
            or not self.is_password_strong(password)
        ):
            return SignUpResult(None)
        hashed = await self.hasher.hash(password)
        # Nothing below awaits, so no other sign-up runs between this check and the commit.
        if self.user_exists(username):
            return SignUpResult(None, NAME_TAKEN)
        pre_authorized = self.open_signup or username in self.get_authed_users()
        infos.update(username=username, password=hashed)
        if pre_authorized:
            infos["is_authorized"] = True
        try:
            user_info = UserInfo(**infos)
        except AssertionError:  # UserInfo's own validation (the e-mail address)
            return SignUpResult(None)
        if self.is_admin_name(username):
            assert self.bootstrap is not None  # signup_refusal checked the secret
            if not self.bootstrap.consume(username):
                return SignUpResult(None, LINK_INVALID)
            self.log.info("Admin %s registered with the bootstrap secret", username)
        if (
            self.allow_self_approval_for
            and not pre_authorized
            and user_info.email
            and re.match(self.allow_self_approval_for, user_info.email)
        ):
            url = self.generate_approval_url(username)
            self.send_approval_email(user_info.email, url)
            user_info.login_email_sent = True
        self.db.add(user_info)
        self.db.commit()
        return SignUpResult(user_info)

    # ---- login ---------------------------------------------------------------------------

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> str | None:
        """NativeAuthenticator's check with bcrypt in the thread pool. Failed logins are
        counted for every name (known or not), and a right password of a user still waiting
        for approval is not counted as a failure."""
        username = self.normalize_username(data["username"])
        password = data["password"]
        if self.allowed_failed_logins and self.is_blocked(username):
            self.log.warning("Login as %s refused: locked after failed logins", username)
            return None
        info = self.get_user(username)
        correct = await self.hasher.check(password, info.password if info else None)
        info = self.get_user(username)  # it may have been deleted meanwhile
        if correct and info is not None:
            if not info.is_authorized:
                return None
            if not info.has_2fa or info.is_valid_token(data.get("2fa")):
                self.successful_login(username)
                return username
        if self.allowed_failed_logins:
            self.add_login_attempt(username)
        return None

    async def password_matches(self, username: str, password: str) -> bool:
        """Whether `password` is `username`'s (bcrypt in the thread pool)."""
        info = self.get_user(username)
        return info is not None and await self.hasher.check(password, info.password)

    def can_try_to_login_again(self, username: str) -> bool:
        # NativeAuthenticator reads timedelta.seconds, which restarts at 0 every day.
        return self.seconds_locked(username) == 0

    def seconds_locked(self, username: str) -> int:
        """Seconds until a locked name may try again (0: not locked by time)."""
        attempts = self.login_attempts.get(self.normalize_username(username))
        if not attempts:
            return 0
        elapsed = (datetime.now() - attempts["time"]).total_seconds()
        return max(0, math.ceil(self.seconds_before_next_try - elapsed))

    def add_login_attempt(self, username: str) -> None:
        if len(self.login_attempts) >= MAX_LOGIN_RECORDS:
            now = datetime.now()
            stale = [
                name
                for name, rec in self.login_attempts.items()
                if (now - rec["time"]).total_seconds() > self.seconds_before_next_try
            ]
            for name in stale:
                del self.login_attempts[name]
        super().add_login_attempt(username)

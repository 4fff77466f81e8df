"""The sign-up and login pages of `CodeyardNativeAuthenticator`.

NativeAuthenticator's own handlers call its synchronous `create_user` and
`is_valid_password`, which run bcrypt inside the event loop, and its login page says nothing
when a name is locked. These keep its templates and messages, await the authenticator's
thread-pooled bcrypt instead, carry the admin bootstrap secret from the sign-up link to the
form post, and tell a locked-out user how long to wait.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import requests
from nativeauthenticator.handlers import LoginHandler, SignUpHandler
from tornado import web
from tornado.httputil import url_concat

if TYPE_CHECKING:
    from codeyard.hubauth.native import CodeyardNativeAuthenticator

RECAPTCHA_VERIFY_URL = "https://www.google.com/recaptcha/api/siteverify"


class CodeyardSignUpHandler(SignUpHandler):  # type: ignore[misc]
    """/hub/signup, with `?bootstrap=<secret>` for registering an admin name."""

    @property
    def auth(self) -> CodeyardNativeAuthenticator:
        return self.authenticator  # type: ignore[no-any-return]

    def _post_url(self, bootstrap: str) -> str:
        url = f"{self.hub.base_url}signup"
        return url_concat(url, {"bootstrap": bootstrap}) if bootstrap else url

    async def _page(self, bootstrap: str, alert: str = "", message: str = "", **kw: Any) -> None:
        html = await self.render_template(
            "signup.html",
            post_url=self._post_url(bootstrap),
            ask_email=self.auth.ask_email_on_signup,
            two_factor_auth=self.auth.allow_2fa,
            recaptcha_key=self.auth.recaptcha_key,
            tos=self.auth.tos,
            alert=alert,
            result_message=message,
            **kw,
        )
        self.finish(html)

    async def get(self) -> None:
        if not self.auth.enable_signup:
            raise web.HTTPError(404)
        bootstrap = self.get_query_argument("bootstrap", "")
        alert = message = ""
        if bootstrap and self.auth.bootstrap_valid(bootstrap):
            names = ", ".join(sorted(self.auth.admin_users))
            alert = "alert-info"
            message = f"This one-time link registers an admin account ({names})."
        elif bootstrap:
            alert = "alert-danger"
            message = self.auth.signup_refusal("", bootstrap) or ""
        await self._page(bootstrap, alert, message)

    async def _is_human(self) -> bool:
        """NativeAuthenticator's reCAPTCHA check, its HTTP call off the event loop."""
        if not self.auth.recaptcha_key:
            return True
        answer = self.get_body_argument("g-recaptcha-response", "", strip=True)
        if not answer:
            return False
        data = {"secret": self.auth.recaptcha_secret, "response": answer}
        r = await asyncio.to_thread(requests.post, RECAPTCHA_VERIFY_URL, data=data, timeout=30)
        return bool(r.json().get("success"))

    async def post(self) -> None:
        if not self.auth.enable_signup:
            raise web.HTTPError(404)
        bootstrap = self.get_argument("bootstrap", "")
        username = self.get_body_argument("username", strip=False)
        password = self.get_body_argument("signup_password", strip=False)
        confirmation = self.get_body_argument("signup_password_confirmation", strip=False)
        human = await self._is_human()
        matches = password == confirmation
        refusal = self.auth.signup_refusal(username, bootstrap)
        taken = self.auth.user_exists(username)
        user = None
        if refusal is None and human and not taken and matches:
            result = await self.auth.sign_up(
                username,
                password,
                bootstrap=bootstrap,
                email=self.get_body_argument("email", "", strip=False),
                has_2fa=bool(self.get_body_argument("2fa", "", strip=False)),
            )
            user, refusal = result.user, result.refusal
        if refusal:
            alert, message = "alert-danger", refusal
        else:
            alert, message = self.get_result_message(
                user, human, taken, matches, self.auth.is_admin_name(username)
            )
        if user is not None:
            bootstrap = ""  # used up: the page's form posts without it
        await self._page(
            bootstrap,
            alert,
            message,
            two_factor_auth_user=user.has_2fa if user else "",
            two_factor_auth_value=user.otp_secret if user else "",
        )


class CodeyardLoginHandler(LoginHandler):  # type: ignore[misc]
    """/hub/login: JupyterHub's form handling, with NativeAuthenticator's messages and the
    lock's remaining time."""

    @property
    def auth(self) -> CodeyardNativeAuthenticator:
        return self.authenticator  # type: ignore[no-any-return]

    async def post(self) -> None:
        data = {
            arg: self.get_argument(arg, strip=arg == "username")
            for arg in self.request.body_arguments
            if arg != "_xsrf"
        }
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        username = data.get("username", "")
        self.set_status(403)
        html = await self._render(
            login_error=await self._login_error(username, data.get("password", "")),
            username=username if len(username) <= 32 else f"{username[:16]}...",
        )
        self.finish(html)

    async def _login_error(self, username: str, password: str) -> str:
        auth = self.auth
        if auth.allowed_failed_logins and auth.is_blocked(auth.normalize_username(username)):
            wait = auth.seconds_locked(username)
            return (
                f"Too many failed logins for this user name. Try again in {wait} seconds"
                " (even the right password is refused until then)."
            )
        info = auth.get_user(username)
        if (
            info is not None
            and not info.is_authorized
            and await auth.password_matches(username, password)
        ):
            return f"User {username} has not been authorized by an administrator yet."
        return "Invalid username or password."

"""Debian's Chromium driven by Python Playwright, for browser tests against a real Hub.

The browser is always `/usr/bin/chromium` (`apt-get install -y chromium`); nothing may
download one. `HubPage` is a user of the Hub's own pages in that browser: sign-up and login
through the real forms, then whatever the test clicks or types. Screenshots go to
`/tmp/codeyard-shots` (`SHOTS`), outside the repository, for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path("/tmp/codeyard-shots")
VIEWPORT = {"width": 1500, "height": 950}

# Other suites on this machine add and remove Docker bridges; Chromium then reports failed
# loads as ERR_NETWORK_CHANGED and retries. That is the host, not the page.
HOST_NETWORK_NOISE = ("net::ERR_NETWORK_CHANGED",)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Playwright Chromium `Browser`; fails (never skips) without Debian's."""
    if not CHROMIUM.exists():
        raise RuntimeError("Debian Chromium is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class HubPage:
    """One browser context (its own cookies) on the Hub at `hub_url`, and its page.

    `console_errors` collects the page's console errors (minus host network noise), so a
    test can assert the Hub's pages run without script errors.
    """

    def __init__(self, browser: Any, hub_url: str, timeout_ms: float = 30_000) -> None:
        self.hub_url = hub_url
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(timeout_ms)
        self.console_errors: list[str] = []
        self.page.on("console", self._note_console)
        # Confirm dialogs (Delete) are answered "yes", as the user would.
        self.page.on("dialog", lambda dialog: dialog.accept())

    def _note_console(self, message: Any) -> None:
        if message.type == "error" and not any(n in message.text for n in HOST_NETWORK_NOISE):
            self.console_errors.append(message.text)

    def goto(self, path: str) -> Any:
        return self.page.goto(f"{self.hub_url}{path}")

    def signup(self, username: str, password: str) -> None:
        """Sign up through NativeAuthenticator's form; the page must say it worked."""
        self.goto("/hub/signup")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=signup_password]", password)
        self.page.fill("input[name=signup_password_confirmation]", password)
        self.page.press("input[name=signup_password_confirmation]", "Enter")
        self.page.wait_for_selector("text=signup was successful")

    def login(self, username: str, password: str) -> None:
        """Log in through the login form and land on the home page."""
        self.goto("/hub/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        self.page.press("input[name=password]", "Enter")
        self.page.wait_for_url("**/hub/home")

    def shot(self, name: str) -> Path:
        """Save a screenshot of the viewport to `SHOTS/<name>.png`; return its path."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()

"""Codeyard's sign-up and login for JupyterHub.

`codeyard.hubauth.native.CodeyardNativeAuthenticator` is NativeAuthenticator with three
changes the Hub config selects by default:

- admin names (`Authenticator.admin_users`) are registered only with the one-time admin
  bootstrap secret (`codeyard.hubauth.bootstrap`), never by whoever signs up first;
- failed logins lock the name for a while (NativeAuthenticator's `allowed_failed_logins`
  and `seconds_before_next_try`), with a message on the login page;
- bcrypt runs in a small thread pool (`codeyard.hubauth.passwords`), so a login does not
  stall every other request the Hub is serving.

The package imports nothing from JupyterHub here, so `codeyard.hubauth.bootstrap` can be used
by scripts that only make or print the bootstrap link.
"""

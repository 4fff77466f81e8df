"""Every Codeyard endpoint needs authentication and declares its own auth_resource."""

from __future__ import annotations

import json

import pytest

from codeyard.server_extension.base import CodeyardHandler

ENDPOINTS = [
    ("GET", "tree", None),
    ("GET", "files", None),
    ("POST", "patch/validate", "{}"),
    ("POST", "patch/apply", "{}"),
    ("POST", "patch/abc123/revert", "{}"),
    ("GET", "audit", None),
]


def _codeyard_handlers(app) -> list[tuple[str, type]]:
    found = []
    for rule in app.web_app.default_router.rules:
        for sub in getattr(rule.target, "rules", []):
            handler = sub.target
            if isinstance(handler, type) and issubclass(handler, CodeyardHandler):
                found.append((sub.matcher.regex.pattern, handler))
    return found


def test_all_handlers_are_decorated_and_scoped(jp_serverapp) -> None:
    handlers = _codeyard_handlers(jp_serverapp)
    assert len(handlers) >= 6, handlers
    resources = set()
    for pattern, handler in handlers:
        assert jp_serverapp.web_app._check_handler_auth(pattern, handler) == [], pattern
        assert handler.auth_resource.startswith("codeyard:"), handler
        resources.add(handler.auth_resource)
    assert {"codeyard:tree", "codeyard:files", "codeyard:patch", "codeyard:audit"} <= resources


def test_server_refuses_unauthenticated_access(jp_serverapp) -> None:
    assert jp_serverapp.allow_unauthenticated_access is False


@pytest.mark.parametrize(("method", "endpoint", "body"), ENDPOINTS)
async def test_requests_without_token_get_403(without_token, method, endpoint, body) -> None:
    err = await without_token(endpoint, method, body)
    assert err.code == 403
    payload = json.loads(err.response.body)
    assert "message" in payload

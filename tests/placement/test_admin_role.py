"""The placement role follows the Hub's admin flag: config admins, and admins promoted or
demoted later through the Hub's own user API (what the admin UI calls), with no restart:
within the service's user cache (`HubOAuth.cache_max_age`: 60 s when run by the Hub, 1 s
in these tests)."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient

pytestmark = pytest.mark.asyncio


async def _set_admin(hub, by_token: str, user: str, admin: bool) -> int:  # type: ignore[no-untyped-def]
    resp = await AsyncHTTPClient().fetch(
        f"{hub.api_base}/users/{user}",
        method="PATCH",
        headers={"Authorization": f"token {by_token}"},
        body=json.dumps({"admin": admin}),
        raise_error=False,
    )
    return resp.code


async def test_a_hub_admin_from_config_is_a_placement_admin(api) -> None:  # type: ignore[no-untyped-def]
    status, body = await api("GET", "servers", token="boss")
    assert status == 200, body
    status, _ = await api("GET", "servers", token="dev")
    assert status == 403


async def test_an_admin_promoted_later_gets_the_role_and_loses_it_on_demotion(  # type: ignore[no-untyped-def]
    hub, hub_tokens, api
) -> None:
    assert (await api("GET", "servers", token="dev"))[0] == 403
    try:
        assert await _set_admin(hub, hub_tokens["boss"], "dev1", True) == 200
        await asyncio.sleep(1.5)  # past the service's user cache
        status, body = await api("GET", "servers", token="dev")
        assert status == 200, body
        status, body = await api("POST", "servers", token="dev", body={"name": ""})
        assert status == 400, body  # past the scope check, refused for the bad name
    finally:
        assert await _set_admin(hub, hub_tokens["boss"], "dev1", False) == 200
    await asyncio.sleep(1.5)
    status, _ = await api("GET", "servers", token="dev")
    assert status == 403

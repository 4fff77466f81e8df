"""Talking to Jupyternaut (jupyter-ai's chat persona) over a real chat websocket."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

PERSONA = "jupyter-ai-personas::jupyter_ai_jupyternaut::JupyternautPersona"


async def chat(ws_base: str, auth: dict[str, str], text: str, wait_s: float = 300) -> str:
    """Send `text` to Jupyternaut in `test.chat` of the server at `ws_base` (`ws://host[:port]/prefix`);
    return its reply, or "" when none came within `wait_s`."""
    ws = await websocket_connect(HTTPRequest(f"{ws_base}/api/chat/ws/test.chat", headers=auth))
    hello = json.loads(await ws.read_message())
    assert hello["action"] == "connection", hello
    # The persona manager attaches to a chat when its first client connects.
    await asyncio.sleep(3)
    message = {
        "type": "client",
        "action": "send",
        "id": uuid.uuid4().hex,
        "body": text,
        "metadata": {"to_persona": PERSONA},
    }
    await ws.write_message(json.dumps(message))
    deadline = time.monotonic() + wait_s
    reply = ""
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
        if raw is None:
            break
        body = json.loads(raw).get("message") or {}
        if body.get("sender") == PERSONA and (body.get("body") or "").strip():
            reply = body["body"]
            # Streamed replies are updated in place; wait for a quiet spell.
            try:
                while True:
                    raw = await asyncio.wait_for(ws.read_message(), 5)
                    if raw is None:
                        break
                    body = json.loads(raw).get("message") or {}
                    if body.get("sender") == PERSONA and body.get("body"):
                        reply = body["body"]
            except TimeoutError:
                pass
            break
    ws.close()
    return reply

"""Writing a file into a workspace through the Jupyter Contents API, as JupyterLab's editor
saves one: the one place the tests spell the request, so a change to the API's model or to
how a workspace is addressed is made once.

`text_file` is the model the API takes for a text file (the in-process extension tests send
it with `jp_fetch`); `put_text` sends it to a running workspace over HTTP and answers the
response as it came, for tests that expect a refusal; `write_text` is the save every other
test makes, and fails unless the workspace took it.
"""

from __future__ import annotations

from typing import Any

import requests


def text_file(content: str) -> dict[str, Any]:
    """The Contents API's model of a text file holding `content`."""
    return {"type": "file", "format": "text", "content": content}


def put_text(
    base: str, path: str, content: str, headers: dict[str, str], timeout: float = 30
) -> requests.Response:
    """PUT `content` as the text file `path` of the workspace server at `base` (its URL up to
    `/api`, e.g. `<hub>/user/<name>/<ws>`); the answer as it came."""
    return requests.put(
        f"{base}/api/contents/{path}", json=text_file(content), headers=headers, timeout=timeout
    )


def write_text(
    base: str, path: str, content: str, headers: dict[str, str], timeout: float = 30
) -> None:
    """Save `content` as the text file `path` of the workspace at `base`; the workspace must
    take it (200 when the file was there, 201 when it is new)."""
    r = put_text(base, path, content, headers, timeout)
    assert r.status_code in (200, 201), r.text

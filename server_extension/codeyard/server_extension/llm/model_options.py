"""The per-request model settings the panel sends (`max_tokens`, `context_lines`).

They are the user's choice within the server's limits: the server checks them against its
own traitlets (`CodeyardLLM.max_tokens_limit`, `max_context_lines`) and refuses anything
outside with a 400 that names the field and the allowed range, instead of clamping silently.
"""

from __future__ import annotations

from typing import Any, TypedDict

from ..errors import bad_request


class ModelOptions(TypedDict, total=False):
    max_tokens: int  # longest answer, in tokens
    context_lines: int  # lines around the selection the prompt may show


class Limits(TypedDict):
    max_tokens: int
    context_lines: int


def _integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(
            f"{key} must be an integer between {low} and {high}, not {type(value).__name__}",
            field=key,
        )
    if not low <= value <= high:
        raise bad_request(
            f"{key} must be between {low} and {high} (this server's limit); got {value}",
            field=key,
            minimum=low,
            maximum=high,
        )
    return value


def parse_model_options(body: dict[str, Any], limits: Limits) -> ModelOptions:
    """The optional `max_tokens` (1..limit) and `context_lines` (0..limit) of a request."""
    options: ModelOptions = {}
    max_tokens = _integer(body, "max_tokens", 1, limits["max_tokens"])
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    context_lines = _integer(body, "context_lines", 0, limits["context_lines"])
    if context_lines is not None:
        options["context_lines"] = context_lines
    return options

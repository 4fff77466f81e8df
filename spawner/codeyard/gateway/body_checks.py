"""What a completion request may ask for, and the most it can cost.

The token ledger reserves one answer of at most `max_tokens` per call. Parameters that make
vLLM generate several answers or ignore its stop conditions would break that bound, so they
are refused with 400 rather than charged: a caller learns at once what is not offered, and
the gateway never has to guess how many answers a call will fan out into.

Refused:

- `n` or `best_of` above 1 (several answers per call);
- more than one prompt in `/v1/completions` (a list of strings, or a list of token lists;
  one string, one token list, or a list holding just one of either is one prompt);
- `ignore_eos: true` and `min_tokens` above 0 (generation past the model's own end).
"""

from __future__ import annotations

import json
from typing import Any

from codeyard.jsonapi import JSONError

# Bytes of prompt text per token when estimating a prompt for the reservation. English and
# code run 3-4 bytes a token with SmolLM2's tokenizer; 3 over-estimates, so a reservation
# does not undershoot. The real count from vLLM's `usage` replaces the estimate at the end.
BYTES_PER_TOKEN = 3


def _unsupported(param: str, message: str) -> JSONError:
    return JSONError(400, "unsupported_parameter", f"{param}: {message}", param=param)


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def prompt_count(prompt: Any) -> int:
    """How many prompts `/v1/completions` would run for this `prompt` value."""
    if isinstance(prompt, str) or (_is_token_list(prompt) and prompt):
        return 1
    if isinstance(prompt, list):
        return len(prompt)
    return 1


def check_fan_out(body: dict[str, Any], path: str) -> None:
    """Raise 400 for any parameter that asks for more than one bounded answer."""
    for param in ("n", "best_of"):
        value = body.get(param)
        if value is not None and value != 1:
            raise _unsupported(
                param,
                f"{value!r} is not offered here: one call gives one answer. Send separate "
                "calls for several answers.",
            )
    if body.get("ignore_eos") not in (None, False):
        raise _unsupported(
            "ignore_eos", "not offered here: the model stops where it ends its answer."
        )
    min_tokens = body.get("min_tokens")
    if min_tokens is not None and min_tokens != 0:
        raise _unsupported(
            "min_tokens", "not offered here: the model stops where it ends its answer."
        )
    if path == "completions":
        count = prompt_count(body.get("prompt"))
        if count > 1:
            raise _unsupported(
                "prompt",
                f"a list of {count} prompts is not offered here: send one prompt (a string "
                "or one list of token ids) per call.",
            )


def prompt_tokens_estimate(body: dict[str, Any]) -> int:
    """An upper-leaning estimate of the prompt's tokens, before vLLM has counted them."""
    prompt = body.get("messages", body.get("prompt", ""))
    if _is_token_list(prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and _is_token_list(prompt[0]):
        return len(prompt[0])
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def completion_limit(body: dict[str, Any]) -> int:
    """The most tokens the call may generate: the smaller of `max_tokens` and
    `max_completion_tokens` when given (the gateway has lowered both to its cap), else 0."""
    limits = [
        v
        for v in (body.get("max_tokens"), body.get("max_completion_tokens"))
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
    return min(limits) if limits else 0


def reservation_tokens(body: dict[str, Any]) -> int:
    """What the ledger sets aside for this call: its prompt, estimated, plus its answer."""
    return prompt_tokens_estimate(body) + completion_limit(body)

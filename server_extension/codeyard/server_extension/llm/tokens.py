"""Token counts for the context budget, with the served model's own tokenizer.

`tokenizer.json` of the served model is read with the `tokenizers` library. Without that file
or library, `TokenCounter` falls back to one token per 3 bytes of UTF-8: BPE tokenizers
average 3.5-4 bytes per token on code, so the estimate errs on the safe side.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


class TokenCounter:
    """Counts tokens with the served model's tokenizer, or estimates them (see module doc)."""

    def __init__(self, tokenizer_file: str | None = None) -> None:
        self.tokenizer_file = tokenizer_file
        self._tok: Any = None
        self._loaded = False

    @property
    def exact(self) -> bool:
        """True when counts come from the model's tokenizer (loaded on first use)."""
        self._load()
        return self._tok is not None

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = self.tokenizer_file
        if not path or not os.path.isfile(path):
            log.info("codeyard: no tokenizer file at %s; estimating token counts", path)
            return
        try:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(path)
        except Exception as exc:  # ImportError, or a file of another format
            log.warning("codeyard: cannot load tokenizer %s (%s); estimating", path, exc)

    def count(self, text: str) -> int:
        if not text:
            return 0
        self._load()
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return -(-len(text.encode("utf-8")) // 3)

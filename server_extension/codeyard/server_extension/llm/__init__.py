"""The model features: explain, rewrite, inline completion and the model's status.

`client.CodeyardLLM` talks to the LLM gateway; `context` builds what the model sees of a
selection (with `redaction`, `tokens` and `prompt`); `handlers` is the HTTP layer.
"""

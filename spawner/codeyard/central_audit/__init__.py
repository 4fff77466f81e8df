"""Codeyard's central audit: a Hub service that keeps every workspace's audit records where
the workspace user cannot rewrite them.

Workspaces (and the LLM gateway) post their records to it; it stores them in its own tables
(`models`), chains them per workspace with an HMAC key only the Hub holds, and signs
checkpoints of each chain head with an Ed25519 key (`chain`). docs/audit.md says what that
proves and what it does not.
"""

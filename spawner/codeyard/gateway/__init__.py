"""The LLM gateway: the one door from workspaces to the shared vLLM.

It runs as a JupyterHub service. A caller proves who it is with its own JupyterHub token
(a workspace has one in `JUPYTERHUB_API_TOKEN`); the gateway checks it with the Hub, applies
per-user limits, forwards an allow-list of OpenAI paths to vLLM with vLLM's private key,
and records metrics and an audit row with hashes, never text.

The Hub runs it as a managed service, `python -m codeyard.gateway --GatewayApp.<name>=...`,
registered by `hubconfig.configure_llm_service`; `GatewayApp` lists the settings and
docs/gateway.md describes the whole.

Token cache: the Hub's answer about a token (owner, scopes) is reused for
`GatewayApp.token_cache_seconds` (default 30 s; 0 asks the Hub on every call). That is also
how long a revoked token, a deleted user or a withdrawn `custom:codeyard-llm` grant keeps
working here. JupyterHub's own service default is 300 s; 30 s bounds that window to half a
minute. An answer past half its age that is used again is renewed in the background
(`token_cache`), so an active token never waits for the Hub on the way to its first token.

Quotas: `accounting.TokenLedger` reserves a call's most possible cost (prompt estimate plus
`max_tokens`) before it goes to vLLM and settles it with vLLM's usage at the end, or with the
whole reservation when the answer was cut short (the caller hung up), so abandoned streams
are charged. Calls that would fan out into several answers (`n`, `best_of`, several
prompts, `ignore_eos`, `min_tokens`) are refused (`body_checks`), and only allowed models
reach vLLM (`models.ModelCatalog`). Metric labels take values from bounded sets only.

Processes: `GatewayApp.processes` workers (the usable cores, at most 4) serve one port
through SO_REUSEPORT under a small supervisor (`prefork`), so a stream waits for a CPU slice
of its own worker only, not of one process relaying everyone. The ledger is a table in a
memory-mapped file all workers share, the audit stays one chain (an flock around each
append), and `/metrics` adds up every worker (prometheus_client's multiprocess mode).

Overhead: calls to vLLM reuse kept-alive connections (`upstream.UpstreamPool`;
`upstream_keepalive_seconds`, below vLLM's 5 s keep-alive), renewed ahead for
`upstream_warm_seconds` after a call so that the next burst finds them open. Each audit row
(with vLLM's own `upstream_ttft_ms`) and the histogram
`codeyard_llm_gateway_overhead_seconds{stage}` record the gateway's own time per call:
`forward` (request read to request sent to vLLM) and `first_chunk` (vLLM's first chunk
handed over to it written to the caller). `codeyard_llm_upstream_connections_total` counts
connections opened to vLLM. tests/bench/bench_gateway.py compares against direct calls.
"""

from .app import GatewayApp

__all__ = ["GatewayApp"]

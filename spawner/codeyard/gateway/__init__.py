"""The LLM gateway: the one door from workspaces to the shared vLLM.

It runs as a JupyterHub service. A caller proves who it is with its own JupyterHub token
(a workspace has one in `JUPYTERHUB_API_TOKEN`); the gateway checks it with the Hub, applies
per-user limits, forwards an allow-list of OpenAI paths to vLLM with vLLM's private key,
and records metrics and an audit row with hashes, never text.

Run it with `python -m codeyard.gateway` (see `GatewayApp` for the settings).
"""

from .app import GatewayApp

__all__ = ["GatewayApp"]

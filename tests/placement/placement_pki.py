"""The test PKI the placement suite uses; it lives in `support.pki`, shared with the namespace
machines of `support.machines`."""

from support.pki import CA, Pair

__all__ = ["CA", "Pair"]

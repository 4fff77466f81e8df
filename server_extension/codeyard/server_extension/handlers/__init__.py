"""HTTP handlers: thin layers that parse a request, call a manager and write JSON."""

"""What several test suites (and the benchmarks) share: the one JupyterHub launcher, the model
stack, and the helpers that start, wait for and stop real processes.

Importable as `support` because pyproject.toml puts `tests/` on pytest's `pythonpath`; each
suite still runs in its own pytest process (`pytest tests/<suite>`).
"""

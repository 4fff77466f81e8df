"""The patch engine: validate, apply and revert unified diffs, all or nothing.

`manager.PatchManager` is the entry point; it owns a `journal.Journal` (the crash-safe
transaction life cycle over `transactions`) and a `revertstore.RevertStore`. `cells`
applies diffs of one notebook cell through it; `handlers` is the HTTP layer.
"""

"""Codeyard's spawner: workspaces as named servers in containers placed on Docker hosts."""

from .spawner import PlacementSpawner

__all__ = ["PlacementSpawner"]

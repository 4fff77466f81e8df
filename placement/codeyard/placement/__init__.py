"""Codeyard's server registry and placement.

Admins register Docker hosts (with encrypted credentials) in a registry; placement policies
decide which host runs each workspace; a health monitor marks unreachable hosts down; an
admin REST API runs as a JupyterHub service. `RegistryHostProvider` plugs the registry into
`PlacementSpawner` through the `codeyard.placement.hosts.HostProvider` seam.
"""

__version__ = "0.1.0"

"""The placement admin service: a tornado app the Hub runs as a service, with HubOAuth."""

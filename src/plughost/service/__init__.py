"""The running host's local API, its client, the web dashboard and ``doctor``."""

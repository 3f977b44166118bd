"""The `api` program: the control plane's HTTP API, dashboard, metrics and file door."""

"""The domain: model, ports, errors and services (standard library only)."""

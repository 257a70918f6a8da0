"""Adapters: storage, identity providers, HTTP."""

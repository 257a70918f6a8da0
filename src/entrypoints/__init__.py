"""Composition root: configuration, DI container, app factory, CLI."""

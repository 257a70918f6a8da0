"""Unit tests: the domain services against in-memory fakes."""

"""Use cases: registration, authorization, tokens, bearer authentication."""

"""Upstream identity providers behind the IdentityProvider port."""

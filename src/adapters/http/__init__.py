"""Flask blueprints, schemas and templates."""

"""Storage adapters (SQLite; PostgreSQL later) behind the domain's repository ports."""

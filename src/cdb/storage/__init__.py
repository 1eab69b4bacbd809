"""The database: event tables, migrations and the Store (SQLite or PostgreSQL)."""

"""Persistence: SQLAlchemy tables, engine and session handling, Alembic migrations."""

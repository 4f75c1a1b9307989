"""The platform's store: SQLAlchemy Core tables, the engine, and Alembic migrations."""

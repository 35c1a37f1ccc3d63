"""The results store (SQLAlchemy) and the environment every record carries."""

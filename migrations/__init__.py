"""Alembic migrations, shipped inside the package so `bonedb db upgrade` works from any install."""

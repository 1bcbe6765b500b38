"""Alembic revisions of the gateway schema, one file each (``vNNNN_slug.py``), oldest first."""

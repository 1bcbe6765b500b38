"""Alembic's environment for the gateway schema: run the revisions on the connection it is given.

Why so small: every caller (``varde gateway migrate``, the gateway's start-up, the
tests) goes through :mod:`gateway.migrations`, which opens the connection and
passes it in ``config.attributes``, so the URL, the SQLite pragmas and the
PostgreSQL advisory lock are decided in one place. The models' metadata comes the
same way (only autogenerate and the drift test need it), so this package never
imports the models and ``gateway.core.db`` may call it without an import cycle.
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config


def _run(config: Config) -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=config.attributes.get("target_metadata"),
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_config = getattr(context, "config", None)
if _config is not None:  # None when imported outside Alembic (pytest collecting doctests)
    _run(_config)

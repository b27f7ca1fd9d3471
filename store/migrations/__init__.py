"""The customer store's Alembic migrations: ``env.py`` and one hand-written file per revision in ``versions/``.

A revision is plain SQL through ``op.execute`` (one statement per call: the asyncpg dialect
prepares each statement), named ``NNNN_what.py`` with ``revision = "NNNN"``.
"""

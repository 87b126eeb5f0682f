"""The SQL warehouse: schema, migrations, normalization, upserts and daily summaries.

SQLAlchemy Core only: no Dagster and no HTTP, so analysts' tables can be rebuilt, migrated and
tested without the rest of the pipeline.
"""

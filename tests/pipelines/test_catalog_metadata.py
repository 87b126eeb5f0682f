"""Catalog metadata from the one data dictionary: descriptions, nullability, the warehouse's own
column types, table names, owners and code references."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from warehouse import dictionary, schema

ASSETS = ("workers", "reservations", "reservation_daily_status_counts")


@pytest.mark.parametrize("table", sorted(schema.metadata.tables))
def test_every_column_of_every_table_is_in_the_data_dictionary(table):
    assert table in dictionary.TABLES
    assert dictionary.undescribed(schema.metadata.tables[table]) == []


def spec_of(defs: dg.Definitions, key: str) -> dg.AssetSpec:
    [spec] = [s for s in defs.resolve_assets_def(key).specs if s.key == dg.AssetKey(key)]
    return spec


@pytest.mark.parametrize(("url", "types", "table_name"), [
    ("sqlite:///data/warehouse.db",
     {"sid": "varchar(64)", "date_created": "datetime", "links": "text"}, "warehouse.reservations"),
    ("postgresql://analyst@db.internal/wh",
     {"sid": "varchar(64)", "date_created": "timestamp with time zone", "links": "text"},
     "wh.public.reservations"),
    ("mysql://analyst@db.internal/wh",
     {"sid": "varchar(64)", "date_created": "datetime(6)", "links": "longtext"},
     "wh.reservations"),
])
def test_reservations_catalog_speaks_the_warehouse_dialect(sync_env, monkeypatch, url, types,
                                                           table_name):
    monkeypatch.setenv("WAREHOUSE_URL", url)  # never connected to: definitions only
    from pipelines.definitions import build_definitions

    spec = spec_of(build_definitions(), "reservations")
    columns = {c.name: c for c in spec.metadata["dagster/column_schema"].columns}
    assert {name: columns[name].type for name in types} == types
    assert spec.metadata["dagster/table_name"] == table_name
    assert columns["sid"].constraints.nullable is False and columns["sid"].constraints.unique
    assert columns["deleted_upstream_at"].constraints.nullable is True
    assert columns["worker_sid"].description == dictionary.COLUMNS["reservations"]["worker_sid"]


def test_every_asset_has_owners_descriptions_and_code_references(sync_env):
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    for key in ASSETS:
        spec = spec_of(defs, key)
        assert spec.owners == ["team:taskrouter-warehouse"], key
        columns = spec.metadata["dagster/column_schema"].columns
        assert all(c.description for c in columns), key
        references = spec.metadata["dagster/code_references"].code_references
        files = {Path(r.file_path).name for r in references}
        assert "schema.py" in files and files & {"assets.py", "sharding.py"}, key
        declared = [r for r in references if Path(r.file_path).name == "schema.py"][0]
        line = Path(declared.file_path).read_text().splitlines()[declared.line_number - 1]
        assert "sa.Table(" in line, (key, line)


def test_the_dictionary_renders_for_the_docs():
    text = dictionary.markdown(schema.reservations)
    assert text.splitlines()[0] == "| column | type | nullable | meaning |"
    assert "| `sid` | varchar(64) | no | Reservation SID" in text

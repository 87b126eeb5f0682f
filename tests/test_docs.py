"""The docs say what the code does: the README stays short and points at docs/, the data
dictionary lists exactly the live schema's columns, and shows the example SQL as it runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import sqlalchemy as sa

from tests.helpers import PROJECT_ROOT
from warehouse.engine import create_warehouse_engine
from warehouse.examples import CLIENTS, EXAMPLES
from warehouse.migrate import ensure_schema

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
DICTIONARY = DOCS / "data-dictionary.md"
TOPICS = ("configuration", "operations", "data-dictionary", "extraction", "databases",
          "scaling-out", "benchmarks")
LATER = {"events.md"}  # written with the events feed; the README already points at it
UNSHIPPED = "DESIGN" + ".md"  # spelled apart so this file does not cite it


def test_readme_is_short_and_shows_the_commands_and_a_pointer_per_topic():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for command in ("make demo", "make test", "make dev", "make sync", "make report",
                    "make migrate", "make bench"):
        assert command in text, command
    assert "http://127.0.0.1:3000" in text and "PORT=" in text
    for topic in TOPICS:
        assert f"docs/{topic}.md" in text, topic
        assert (DOCS / f"{topic}.md").is_file(), topic
    assert "docs/events.md" in text


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists() and Path(target).name not in LATER:
                broken.append(f"{page.name}: {target}")
    assert not broken, broken


def test_the_benchmark_results_the_docs_cite_are_kept():
    cited = set()
    for page in [README, *DOCS.glob("*.md"), PROJECT_ROOT / "benchmarks" / "README.md"]:
        cited |= set(re.findall(r"benchmarks/results/([\w.*-]+\.(?:md|json))", page.read_text(encoding="utf-8")))
    missing = [name for name in cited
               if not list((PROJECT_ROOT / "benchmarks" / "results").glob(name))]
    assert cited and not missing, missing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_anchors_in_the_docs_point_at_headings():
    broken = []
    for page in [README, *DOCS.glob("*.md")]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text(encoding="utf-8")):
            linked = page.parent / target if target else page
            if not linked.exists():
                continue  # a page written later (test above)
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.MULTILINE)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken, broken


def test_no_file_cites_a_design_document_that_does_not_ship():
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    citing = [name for name in tracked if name.endswith((".py", ".md"))
              and (PROJECT_ROOT / name).is_file()
              and UNSHIPPED in (PROJECT_ROOT / name).read_text(encoding="utf-8")]
    assert not (PROJECT_ROOT / UNSHIPPED).exists() and citing == [], citing


def documented_columns() -> dict[str, set[str]]:
    """``## `name` …`` sections of the dictionary: the backticked names in their tables' first
    column (one cell may list several)."""
    text = DICTIONARY.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    found: dict[str, set[str]] = {}
    for section in sections:
        title = re.match(r"`([a-z_]+)`", section)
        if not title:
            continue
        columns = found.setdefault(title.group(1), set())
        for line in section.splitlines():
            if line.startswith("| `"):
                columns.update(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
    return found


def live_columns(tmp_path: Path) -> dict[str, set[str]]:
    """Every table and view of a warehouse migrated to the newest revision, read back from the
    database (so a new revision's tables and columns are found without editing this test)."""
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        ensure_schema(engine)
        inspector = sa.inspect(engine)
        names = [*inspector.get_table_names(), *inspector.get_view_names()]
        return {name: {c["name"] for c in inspector.get_columns(name)} for name in names
                if name != "warehouse_alembic_version"}
    finally:
        engine.dispose()


def test_the_data_dictionary_lists_exactly_the_live_schema(tmp_path):
    live = live_columns(tmp_path)
    documented = documented_columns()
    assert {"reservations", "workers", "reservation_daily_status_counts",
            "reservation_status_history", "reservation_times"} <= set(live)
    missing_tables = sorted(set(live) - set(documented))
    unknown_tables = sorted(set(documented) - set(live))
    assert not missing_tables, f"add a section to docs/data-dictionary.md for {missing_tables}"
    assert not unknown_tables, f"docs/data-dictionary.md documents no such table {unknown_tables}"
    for table, columns in live.items():
        assert documented[table] == columns, (
            f"{table}: undocumented {sorted(columns - documented[table])}, "
            f"documented but absent {sorted(documented[table] - columns)}")


def test_the_data_dictionary_shows_every_example_as_it_runs():
    text = DICTIONARY.read_text(encoding="utf-8")
    for example in EXAMPLES.values():
        assert f"```sql\n{example.sql};\n```" in text, f"{example.name}: SQL differs from examples.py"
        assert example.question in text, example.name
        for client in CLIENTS if example.variables else ():
            setup, sql = example.for_client(client)
            assert "\n".join(setup) + f"\n{sql};" in text, (example.name, client)

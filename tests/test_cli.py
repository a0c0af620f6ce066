"""The command line, end to end on small real files."""

import json

from typer.testing import CliRunner

from api.cli import app
from indexer.loaders import write_items, write_reviews
from indexer.schema import make_items, make_reviews
from indexer.store import ItemIndex

from .conftest import TINY_ITEMS, TINY_REVIEWS

runner = CliRunner()


def test_index_then_similar_and_search(tmp_path):
    write_items(make_items(TINY_ITEMS), tmp_path / "items.csv")
    write_reviews(make_reviews(TINY_REVIEWS), tmp_path / "reviews.jsonl")
    out = tmp_path / "ix"
    r = runner.invoke(app, ["index", str(tmp_path / "items.csv"), "--reviews", str(tmp_path / "reviews.jsonl"),
                            "--out", str(out), "--kind", "hnsw"])
    assert r.exit_code == 0, r.output
    assert "Cleaning report" in r.output and "indexed 9 items with minilm (hnsw, 384-d)" in r.output
    assert len(ItemIndex.load(out, expect_model="minilm")) == 9
    r = runner.invoke(app, ["similar", "dryer", "--index", str(out), "-k", "2"])
    assert r.exit_code == 0 and r.output.splitlines()[1].split()[1] == "dryer-travel"
    r = runner.invoke(app, ["similar", "dryer", "--index", str(out), "--category", "coffee"])
    assert {line.split()[1] for line in r.output.splitlines()[1:]} == {"espresso", "grinder"}
    r = runner.invoke(app, ["similar", "nope", "--index", str(out)])
    assert r.exit_code == 2 and "nope" in r.output
    r = runner.invoke(app, ["search", "burr grinder for coffee", "--index", str(out), "-k", "1"])
    assert r.exit_code == 0 and "grinder" in r.output


def test_malformed_catalog_names_file_line_and_field(tmp_path):
    bad = tmp_path / "items.jsonl"
    bad.write_text(json.dumps({"item_id": "a", "title": "ok"}) + "\n" + '{"item_id": "b", "price": "cheap"}\n')
    r = runner.invoke(app, ["index", str(bad), "--out", str(tmp_path / "ix")])
    assert r.exit_code == 2
    assert f"{bad}:2" in r.output and "price" in r.output
    assert not (tmp_path / "ix").exists()

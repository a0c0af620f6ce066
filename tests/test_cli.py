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


# ---- a user's mistake: one line naming what to fix, exit code 2, no traceback -----------------------
def one_line_error(r, *expected: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    for text in expected:
        assert text in lines[0], lines[0]


def test_typical_mistakes_are_one_line_with_exit_code_2(tmp_path):
    from .conftest import shared_data

    missing = str(tmp_path / "no-index")
    cases = [
        (["index", "data/demo", "--out", str(tmp_path / "ix"), "--format", "beuaty"],
         ["unknown format 'beuaty'", "did you mean 'beauty'"]),
        (["index", str(tmp_path / "nothere.csv"), "--out", str(tmp_path / "ix")], ["nothere.csv", "no such file"]),
        (["index", "data/demo", "--out", str(tmp_path / "ix"), "--kind", "hsnw"], ["--kind", "hnsw"]),
        (["index", "data/demo", "--out", str(tmp_path / "ix"), "--model", "minlm"],
         ["unknown model 'minlm'", "did you mean 'minilm'"]),
        (["similar", "D0005", "--index", missing], [missing, "semrec index"]),
        (["search", "hair dryer", "--index", missing], [missing, "semrec index"]),
        (["serve", "--index", missing], [missing, "semrec index"]),
        (["compact", "--index", missing], [missing]),
        (["similar"], ["Missing argument", "similar --help"]),
        (["events", "import", "--dataset", "magazine"], ["--data-dir"]),
        (["events", "import", "--dataset", "subscription", "--data-dir", str(tmp_path), "--db", str(tmp_path / "e")],
         ["unknown dataset 'subscription'", "subscription-boxes", "beauty, scientific, magazine"]),
        (["events", "import", "--dataset", "magazine", "--data-dir", str(shared_data("amazon-beauty-2014")),
          "--db", str(tmp_path / "e.db")],
         ["amazon-beauty-2014", "not the 'magazine' dataset", "amazon-magazine-2018"]),
        (["eval", "--dataset", "beuty", "--data-dir", str(tmp_path), "--out", str(tmp_path / "ev")],
         ["unknown dataset 'beuty'", "did you mean 'beauty'"]),
        (["eval", "--dataset", "beauty", "--data-dir", str(tmp_path), "--out", str(tmp_path / "ev"), "--users", "0"],
         ["--users", "greater than or equal to 1"]),
        (["bogus"], ["No such command 'bogus'"]),
    ]
    for args, expected in cases:
        one_line_error(runner.invoke(app, args), *expected)
    assert not (tmp_path / "ix").exists() and not (tmp_path / "e.db").exists()


def test_serve_names_a_port_in_use_and_a_model_mismatch(tmp_path, tiny_index):
    import socket

    tiny_index.save(tmp_path / "ix")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["serve", "--index", str(tmp_path / "ix"), "--port", str(port)])
        demo = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--port", str(port), "--exit"])
    one_line_error(r, f"127.0.0.1:{port}", "--port")
    one_line_error(demo, f"127.0.0.1:{port}", "--port")  # told before any indexing
    assert not (tmp_path / "demo" / "index").exists()
    r = runner.invoke(app, ["serve", "--index", str(tmp_path / "ix"), "--model", "use-multilingual"])
    one_line_error(r, "'minilm'", "--model")


def test_train_mistakes_are_one_line_and_write_no_models(tmp_path, tiny_index):
    tiny_index.save(tmp_path / "ix")
    ix, missing = str(tmp_path / "ix"), str(tmp_path / "no-index")
    empty_log = tmp_path / "events.db"
    from retriever.eventstore import open_event_store

    open_event_store(empty_log, pseudonym_key="k" * 16).close()
    cases = [
        (["train", "--index", ix], ["--db", "--dataset"]),
        (["train", "--index", missing, "--db", str(empty_log)], [missing, "semrec index"]),
        (["train", "--index", ix, "--db", str(tmp_path / "nope.db")], ["no event log", "nope.db"]),
        (["train", "--index", ix, "--dataset", "beauty"], ["--data-dir"]),
        (["train", "--index", ix, "--db", str(empty_log)], ["0 shoppers", "at least 20"]),
        (["train", "--index", ix, "--dataset", "beauty", "--data-dir", ix, "--every", "5"], ["--every", "--db"]),
        (["train", "--index", ix, "--db", str(empty_log), "--every", "-1"], ["--every"]),
        (["train", "--index", ix, "--db", str(empty_log), "--ranker", str(tmp_path / "no-ranker")],
         ["--ranker", "no-ranker"]),
    ]
    for args, expected in cases:
        one_line_error(runner.invoke(app, args, env={"SEMREC_PSEUDONYM_KEY": "k" * 16}), *expected)
    assert not (tmp_path / "ix" / "models").exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    import indexer.store

    def broken(path):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(indexer.store, "read_manifest", broken)
    r = runner.invoke(app, ["serve", "--index", "anywhere"])
    assert r.exit_code == 1 and isinstance(r.exception, ZeroDivisionError)

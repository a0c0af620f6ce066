"""The README's main job: index the bundled demo catalog, serve it, show results over HTTP."""

import socket

from typer.testing import CliRunner

from api.cli import app
from indexer.store import ItemIndex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_indexes_serves_and_answers(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "ix"), "--port", str(free_port()), "--exit"])
    assert r.exit_code == 0, r.output
    assert "indexed 300 items with minilm" in r.output and "630 shopper events" in r.output
    assert "GET /items/D0005/similar?k=5" in r.output and "GET /search?q=" in r.output
    # The hair dryer's neighbours are hair tools, shown by title.
    block = r.output.split("GET /items/D0005/similar?k=5")[1].split("GET ")[0]
    assert "Hair Dryer" in block or "Straightener" in block or "Curling" in block
    assert len(ItemIndex.load(tmp_path / "ix" / "index")) == 300
    assert "GET /users/U020/recommendations" in r.output and "onboarding" in r.output
    # keys are on in the demo too: the shopper lists came through shopper tokens; the console has a key
    assert "Console admin key for this run" in r.output and "POST /demo/token" in r.output
    assert "  [" in r.output.split("GET /users/U020/recommendations")[1]  # the list has rows

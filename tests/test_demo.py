"""The README's main job: index the bundled demo catalog, serve it, show results over HTTP."""

import re
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
    assert '"logger"' not in r.output  # the JSON access log goes to its file, not between the examples
    assert '"route": "/users/{user_id}/recommendations"' in (tmp_path / "ix" / "access.log").read_text()
    assert "indexed 300 items with minilm" in r.output and "630 shopper events" in r.output
    assert "GET /items/D0005/similar?k=5" in r.output and "GET /search?q=" in r.output
    # The hair dryer's neighbours are hair tools, shown by title.
    block = r.output.split("GET /items/D0005/similar?k=5")[1].split("GET ")[0]
    assert "Hair Dryer" in block or "Straightener" in block or "Curling" in block
    assert len(ItemIndex.load(tmp_path / "ix" / "index")) == 300
    assert "GET /users/U020/recommendations" in r.output and "onboarding" in r.output
    # Recommendations show rank, the reason the API gave and the sources; a list that MMR reordered says so.
    recs = r.output.split("GET /users/U020/recommendations")[1].split("POST ")[0].splitlines()[1:]
    assert recs[0].lstrip().startswith("1.") and "(history)" in "".join(recs) and "from " in recs[1]
    lists = re.findall(r"^(?:GET|POST) .*?(?=\n\n|\Z)", r.output, re.M | re.S)
    assert len(lists) == 8
    for block in lists:
        scores = [float(m) for m in re.findall(r"^ +\d+\. +(-?\d+\.\d+) ", block, re.M)]
        assert len(scores) == 5, block
        assert (scores == sorted(scores, reverse=True)) != ("note: scores are not in descending order" in block)

    # keys are on in the demo too: the shopper lists came through shopper tokens; the console has a key
    assert "Console admin key for this run" in r.output and "POST /demo/token" in r.output

    again = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "ix"), "--port", str(free_port()), "--exit"])
    assert again.exit_code == 0, again.output
    assert "is up to date with data/demo" in again.output and "indexed 300 items" not in again.output
    assert "(0 new)" in again.output

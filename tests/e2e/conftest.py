"""Browser tests: Debian's Chromium, headless, driven by Playwright against the app on loopback.

The app serves an index of the bundled demo catalog (built once per session) with the demo reviews
and orders loaded as shopper events, two A/B variants and a small evaluation report. Screenshots go to
``$SEMREC_ARTIFACTS/e2e-screenshots`` (default ``out/e2e-screenshots``, not committed).

Never ``playwright install``: the browser is the system's ``/usr/bin/chromium``
(``apt-get install -y chromium``); the tests skip when it or the Playwright package is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from ..conftest import make_app, open_events_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SEMREC_CHROMIUM", "/usr/bin/chromium"))
ADMIN = "sk_e2e_console_admin"  # the console's key; the storefront shops with demo shopper tokens
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    # CI sets SEMREC_REQUIRE_E2E=1: there a missing browser is a failure, not a quiet skip.
    missing = pytest.fail if os.environ.get("SEMREC_REQUIRE_E2E") == "1" else pytest.skip
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
                "(or set SEMREC_CHROMIUM) to run the browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package is needed: pip install -e '.[e2e]'")
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots() -> Path:
    base = Path(os.environ.get("SEMREC_ARTIFACTS", ROOT / "out"))
    folder = base / "e2e-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _report(folder: Path) -> None:
    """A small evaluation report: one plot and its results.md, as the harness writes them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    systems = ["popular", "item-knn", "dense", "fused"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].bar(systems, [0.021, 0.048, 0.066, 0.081], color="tab:blue")
    axes[0].set_title("test ndcg@10")
    axes[1].bar(systems, [0.04, 0.09, 0.12, 0.15], color="tab:orange")
    axes[1].set_title("test recall@10")
    fig.tight_layout()
    fig.savefig(folder / "metrics.png", dpi=80)
    plt.close(fig)
    (folder / "results.md").write_text("# Offline evaluation: demo (browser test)\n\n| system | ndcg@10 |\n"
                                       "|---|---:|\n| popular | 0.0210 |\n| fused | 0.0810 |\n")


@pytest.fixture(scope="session")
def server(chromium_path, embedder, tmp_path_factory) -> str:
    """The app on a free loopback port, serving the demo catalog and its shoppers; yields its URL."""
    import uvicorn

    from api.cli_common import REPO_DATA
    from api.experiments import Variant
    from api.security import ApiKey, digest
    from api.settings import Settings
    from indexer.build import build_index
    from indexer.clean import clean_catalog
    from indexer.loaders import load_catalog
    from retriever.eventstore import open_event_store
    from retriever.orders import import_orders
    from retriever.personal import import_reviews

    root = tmp_path_factory.mktemp("e2e")
    settings = Settings(index_dir=root / "index", db_path=root / "events.db", report_dir=root / "report",
                        shoppers_file=REPO_DATA / "demo" / "reviews.jsonl", demo_tokens=True,
                        token_secret="e2e-shopper-token-secret", rate_per_minute=1e6, rate_burst=100_000,
                        api_keys=[ApiKey(name="console", role="admin", sha256=digest(ADMIN))],
                        variants=[Variant(name="control", share=0.5),
                                  Variant(name="no-covisit", share=0.5, candidates={"covisit": 0})])
    catalog, _ = clean_catalog(load_catalog(REPO_DATA / "demo"))
    index = build_index(catalog, embedder, progress=False)
    index.save(settings.index_dir)
    seed = open_event_store(settings.db_path, pseudonym_key=settings.pseudonym_key)
    import_reviews(seed, catalog.reviews, "demo")
    import_orders(seed, REPO_DATA / "demo" / "orders.jsonl", "demo")
    seed.close()
    _report(settings.report_dir)
    store, state = open_events_for(settings)
    port = _free_port()
    app = make_app(settings, index, embedder, store, state)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the app did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    import httpx

    httpx.get(f"{base}/search", params={"q": "warm up", "k": 1}, timeout=120)  # builds the search box
    yield base
    srv.should_exit = True
    thread.join(timeout=10)
    store.close()


@pytest.fixture(scope="session")
def browser(chromium_path, tmp_path_factory):
    """Chromium with a fresh profile: Playwright's own temporary --user-data-dir, removed afterwards."""
    from playwright.sync_api import sync_playwright

    downloads = tmp_path_factory.mktemp("chromium-downloads")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS,
                              downloads_path=str(downloads), timeout=60_000)
        yield b
        b.close()
    shutil.rmtree(downloads, ignore_errors=True)


@pytest.fixture()
def page(browser, server, request):
    """A new page in its own context (empty localStorage: a new visitor), failing on script errors."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server,
                                  service_workers="block")
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # Only the app itself may be reached: anything else is a failure, not a fetch.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
               else (errors.append(f"external request {route.request.url}"), route.abort()))
    page.errors = errors
    yield page
    context.close()
    assert not errors, errors

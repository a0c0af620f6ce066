"""The API docs work offline: Swagger UI loads its assets from the app itself (the page fixture
fails on any request that leaves the app) and renders every operation of the schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def operations(page) -> list[tuple[str, str]]:
    spec = page.request.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


def test_swagger_ui_renders_every_operation_offline(page, screenshots):
    expected = operations(page)
    page.goto("/docs")
    page.locator(".opblock").first.wait_for()
    shown = page.eval_on_selector_all(
        ".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent.trim(),"
                    " e.querySelector('.opblock-summary-path').getAttribute('data-path')])")
    assert sorted(map(tuple, shown)) == sorted(expected)
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("semrec")
    page.locator(".opblock-summary", has_text="/items/{item_id}/similar").first.click()  # an operation opens
    page.locator(".opblock.is-open .parameters").first.wait_for()
    page.screenshot(path=str(screenshots / "08-api-docs.png"), full_page=False)

"""The storefront and console in a real browser (headless Chromium): search with suggestions and
expansion, a product page with similar items, onboarding a new visitor, a click changing the feed,
and the console. Each scenario leaves a screenshot in the artifacts folder."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import ADMIN

pytestmark = pytest.mark.e2e


def ready(page, view: str) -> None:
    """Wait until the page shows ``view`` with its data loaded."""
    page.wait_for_selector(f'main[data-view="{view}"][aria-busy="false"]')


def feed_ids(page) -> list[str]:
    return page.eval_on_selector_all("#feed a[data-item]", "els => els.map(e => e.dataset.item)")


def shot(page, screenshots, name: str) -> None:
    page.wait_for_timeout(400)  # let ratings fill in and smooth scrolling end
    page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")  # else the sticky header is drawn mid-page
    page.wait_for_timeout(100)
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_search_with_keyboard_suggestions_and_expansion(page, screenshots):
    page.goto("/")
    ready(page, "home")
    box = page.get_by_role("combobox", name="Search products, brands and categories")
    box.click()
    box.press_sequentially("hair d", delay=40)
    options = page.locator("#suggest-list li[role=option]")
    options.first.wait_for()
    assert box.get_attribute("aria-expanded") == "true"
    texts = options.all_inner_texts()
    assert any("hair dryer" in t.lower() for t in texts), texts
    box.press("ArrowDown")
    box.press("ArrowDown")
    assert box.get_attribute("aria-activedescendant") == "suggestion-1"
    assert page.locator("#suggestion-1").get_attribute("aria-selected") == "true"
    shot(page, screenshots, "01-suggestions")
    box.press("Escape")
    assert page.locator("#suggest-list").is_hidden() and box.get_attribute("aria-expanded") == "false"

    box.fill("hair dryer for thick curly hair")
    box.press("Enter")
    ready(page, "search")
    assert page.locator("h1").inner_text() == "Results for “hair dryer for thick curly hair”"
    titles = page.locator("#results .card .title").all_inner_texts()
    assert len(titles) >= 10
    assert sum("dryer" in t.lower() for t in titles[:5]) >= 2, titles[:5]
    expansion = page.locator("#expansion")
    expansion.wait_for()
    assert expansion.inner_text().startswith("Also searching:")
    assert page.locator("#expansion .term").count() >= 1
    page.locator("#results .rating .stars").first.wait_for()  # average stars from the demo reviews
    shot(page, screenshots, "02-search-results")

    # A suggestion picked with the keyboard alone opens what it names.
    box.fill("")
    box.press_sequentially("ioniq", delay=40)
    options.first.wait_for()
    first = page.locator("#suggestion-0 .s-text").inner_text()
    box.press("ArrowDown")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('main').dataset.view !== 'home'")
    page.wait_for_selector('main[aria-busy="false"]')
    assert first.lower() in page.locator("main h1").inner_text().lower()


def test_product_page_shows_similar_items_and_also_bought(page, screenshots):
    page.goto("/#/item/D0005")
    ready(page, "item")
    assert "Hair Dryer" in page.locator("#product-title").inner_text()
    page.locator("#product-rating .stars").wait_for()
    similar = page.locator("#similar .card .title").all_inner_texts()
    assert len(similar) >= 4
    assert sum(bool(re.search(r"dryer|straightener|curling|hair", t, re.I)) for t in similar) >= 3, similar
    also = page.locator("#also-bought .card")
    assert also.count() >= 1  # the demo shoppers' histories give co-visitation counts
    shot(page, screenshots, "03-product-page")


def test_onboarding_a_new_visitor_turns_the_feed_at_once(page, screenshots):
    page.goto("/")
    ready(page, "home")
    before = feed_ids(page)
    assert len(before) == 12
    form = page.locator("#onboard-form")
    form.get_by_role("button", name="Pet Supplies").click()
    assert form.get_by_role("button", name="Pet Supplies").get_attribute("aria-pressed") == "true"
    form.get_by_label("In your own words").fill("toys and litter for my cat")
    with page.expect_response(lambda r: "/onboarding" in r.url and r.request.method == "POST") as answer:
        form.get_by_role("button", name="Show my picks").click()
    assert answer.value.status == 200
    page.wait_for_function("() => document.querySelector('#feed-title').textContent === 'Picked for you'")
    after = feed_ids(page)
    assert after != before
    pets = page.eval_on_selector_all("#feed a[data-item]", "els => els.filter(e => e.dataset.cats.startsWith("
                                                          "'Pet Supplies')).length")
    assert pets >= 8, after
    assert page.locator("#feed .reason").count() == 12
    shot(page, screenshots, "04-onboarding-feed")

    page.reload()  # the answers are stored: the visitor is now known
    ready(page, "home")
    assert page.locator("#welcome-title").is_visible()
    assert page.eval_on_selector_all("#feed a[data-item]", "els => els.filter(e => e.dataset.cats.startsWith("
                                                           "'Pet Supplies')).length") >= 8


def test_a_click_is_an_event_and_the_feed_follows(page, screenshots, server):
    page.goto("/")
    ready(page, "home")
    before = feed_ids(page)
    card = page.locator("#feed a[data-item]").nth(3)
    item, list_id = card.get_attribute("data-item"), card.get_attribute("data-list")
    assert re.fullmatch(r"[0-9a-f]{32}", list_id)  # the recommendation's request_id
    with page.expect_response(lambda r: r.url.endswith("/events") and r.request.method == "POST") as sent:
        card.click()
    assert sent.value.status == 200 and sent.value.json()["stored"] == 1
    event = json.loads(sent.value.request.post_data)["events"][0]
    assert (event["type"], event["item_id"], event["request_id"]) == ("click", item, list_id)
    ready(page, "item")
    user = page.evaluate("JSON.parse(localStorage.getItem('semrec.user'))")
    assert page.request.get(f"{server}/users/{user}/history").status == 401  # personal: not for anyone
    history = page.request.get(f"{server}/users/{user}/history", headers={"X-API-Key": ADMIN}).json()["events"]
    assert [(e["item_id"], e["type"], e["request_id"]) for e in history] == [(item, "click", list_id)]

    page.go_back()
    ready(page, "home")
    after = feed_ids(page)
    assert after != before
    assert page.locator("#feed .badge.fresh").count() >= 1
    assert "new pick" in page.locator("#feed-note").inner_text()
    reasons = page.locator("#feed .reason").all_inner_texts()
    assert any(r.startswith("Because you viewed") for r in reasons), reasons
    shot(page, screenshots, "05-feed-after-click")


def test_console_shows_history_sources_variants_and_report(page, screenshots):
    page.add_init_script(f"localStorage.setItem('semrec.apiKey', JSON.stringify('{ADMIN}'))")  # staff key
    page.goto("/#/console/U020")
    ready(page, "console")
    assert page.locator("#shopper-list button").count() == 60
    assert page.locator('#shopper-list button[aria-current="true"]').get_attribute("data-user") == "U020"
    page.locator("#history-list li").first.wait_for()
    assert page.locator("#history-list li").count() >= 5
    assert "rating" in page.locator("#history-list .etype").first.inner_text().lower()
    page.locator("#recs-list li").first.wait_for()
    assert page.locator("#recs-list .src").count() >= 10  # each item names its sources
    page.locator("#overlap").wait_for()
    columns = page.locator("#compare ul[data-variant]")
    assert sorted(columns.nth(i).get_attribute("data-variant") for i in range(2)) == ["control", "no-covisit"]
    assert columns.nth(0).locator("li").count() == columns.nth(1).locator("li").count() == 10
    assert re.fullmatch(r"\d+ of 10 items in both lists.*", page.locator("#overlap").inner_text())
    plot = page.locator("#report img")
    plot.wait_for()
    page.wait_for_function("() => document.querySelector('#report img').naturalWidth > 0")
    assert page.locator("#history-title").is_visible()
    shot(page, screenshots, "06-console")

    page.locator('#shopper-list button[data-user="U033"]').click()
    page.wait_for_function("() => document.querySelector('#console-user')?.textContent === 'U033'")
    ready(page, "console")
    assert page.locator("#who-name").inner_text() == "U033"  # the storefront now shops as them


def test_the_page_works_on_a_phone(browser, server, screenshots):
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto("/#/c/Kitchen")
    ready(page, "category")
    assert page.locator("#category-grid .card").count() >= 10
    columns = page.evaluate("getComputedStyle(document.querySelector('#category-grid')).gridTemplateColumns")
    assert len(columns.split()) == 2
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    page.screenshot(path=str(screenshots / "07-phone-category.png"), full_page=False)
    context.close()


def test_a_reason_given_by_the_api_is_shown_as_it_is(page):
    """When the recommendations carry a ``reason`` (a reranker's explanation), the page shows it
    instead of deriving one from the sources."""

    def add_reason(route):
        response = route.fetch()
        body = response.json()
        body["results"][0]["reason"] = "Because the reranker says so"
        route.fulfill(response=response, json=body)

    page.route("**/users/*/recommendations*", add_reason)
    page.goto("/")
    ready(page, "home")
    page.locator("#welcome-title, #hero-title").first.wait_for()
    page.locator("#onboard-form").get_by_label("In your own words").fill("espresso beans")
    page.locator("#onboard-form").get_by_role("button", name="Show my picks").click()
    page.wait_for_function("() => document.querySelector('#feed-title').textContent === 'Picked for you'")
    page.goto("/#/c/Kitchen")
    ready(page, "category")
    assert page.locator("#category-grid .reason").first.inner_text() == "Because the reranker says so"


def test_product_page_claims_only_what_the_data_says(page, screenshots):
    page.goto("/#/item/D0005")  # the demo catalog has stock data
    ready(page, "item")
    assert page.locator(".product .stock").inner_text() == "In stock"
    assert "ships" not in page.locator(".product").inner_text().lower()
    keys = page.locator(".attrs dt").all_inner_texts()
    assert keys and all(k[0].isupper() and "_" not in k for k in keys), keys

    def no_stock_data(route):  # as GET /items/{id} answers for a catalog without a stock field
        response = route.fetch()
        body = response.json()
        body.update(in_stock=None, attributes={"main_category": "All Beauty", "salesRank": "1,204",
                                               "Item Form:": "Powder", "hair type": "thick, curly"})
        route.fulfill(response=response, json=body)

    page.route("**/items/D0040", no_stock_data)
    page.goto("/#/item/D0040")
    ready(page, "item")
    assert page.locator(".product .stock").count() == 0  # no claim either way
    assert page.locator("#add-to-cart").is_enabled()
    assert page.locator(".attrs dt").all_inner_texts() == ["Main category", "Sales rank", "Item form", "Hair type"]
    shot(page, screenshots, "09-product-no-stock-data")


def test_console_shopper_list_does_not_scroll_sideways_or_cut_tags(page, screenshots):
    page.add_init_script(f"localStorage.setItem('semrec.apiKey', JSON.stringify('{ADMIN}'))")  # staff key
    page.goto("/#/console/U020")
    ready(page, "console")
    page.locator("#shopper-list .tag").first.wait_for()
    box = page.evaluate("(() => { const l = document.querySelector('#shopper-list');"
                        " return [l.scrollWidth, l.clientWidth]; })()")
    assert box[0] <= box[1], box
    cut = page.eval_on_selector_all(
        "#shopper-list .tag", "els => els.filter(e => { const r = e.getBoundingClientRect(),"
        " b = e.closest('button').getBoundingClientRect();"
        " return e.scrollWidth > e.clientWidth + 1 || r.right > b.right + 0.5 || r.left < b.left - 0.5; })"
        ".map(e => e.textContent)")
    assert cut == [], cut
    assert page.locator("#shopper-list .tag").count() >= 60  # every shopper shows their top categories
    page.locator("#shopper-list").screenshot(path=str(screenshots / "10-console-shopper-list.png"))

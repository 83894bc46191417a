"""The web page in headless Debian Chromium (Playwright, never a downloaded browser).

Sends messages until the track titled with markup shows up as a card, checks it renders
as text, plays a track, likes one, rejects one, starts over, and saves a screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import HOSTILE_TITLE

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(served_url):
    return served_url


def test_chat_page_cards_play_like_and_escaping(browser, server, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1000, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    external: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server) else external.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(server + "/")
    expect(page.locator("#model-info")).to_contain_text("tracks")
    box = page.get_by_label("Message to TalkPlay (Enter sends, Shift+Enter adds a line)")
    expect(box).to_be_focused()

    # keep asking (the session never repeats a track) until the markup-titled track shows
    hostile = page.locator(".card h3", has_text=HOSTILE_TITLE)
    for turn in range(1, 12):
        box.fill(f"something calm, please (request {turn})")
        box.press("Enter")
        expect(page.locator("#status")).to_be_visible()
        expect(page.locator(".msg.assistant")).to_have_count(turn, timeout=60_000)
        expect(page.locator("#status")).to_be_hidden(timeout=120_000)
        if hostile.count():
            break
    assert hostile.count() == 1, "the markup-titled track never appeared"
    assert hostile.inner_text() == HOSTILE_TITLE
    assert page.locator(".log img").count() == 0 and not dialogs
    cards = page.locator(".card")
    assert cards.count() >= 3
    expect(page.locator(".msg.assistant .text").first).not_to_be_empty()

    # like and reject: the buttons show their state and the server records it
    first = cards.first
    first.get_by_role("button", name="Like").click()
    expect(first.get_by_role("button", name="Like")).to_have_attribute("aria-pressed", "true")
    cards.nth(1).get_by_role("button", name="Reject").click()
    expect(cards.nth(1)).to_have_class("card rejected")

    # play: the page streams the track's audio from the server
    play = page.locator(".card button.play").first
    with page.expect_response(lambda r: "/audio" in r.url) as audio:
        play.click()
    assert audio.value.status in (200, 206)
    expect(play).to_have_attribute("aria-pressed", "true")
    shot = tmp_path / "talkplay.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("TALKPLAY_SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["TALKPLAY_SAVE_SCREENSHOT"])

    # start over clears the chat
    page.get_by_role("button", name="Start over: clear the chat and feedback").click()
    expect(page.locator(".card")).to_have_count(0)
    assert not external, f"the page fetched outside resources: {external}"
    assert not errors, errors
    page.close()


def test_phone_width_is_readable(browser, server):
    page = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True)
    page.goto(server + "/")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, "no horizontal scrolling at phone width"
    assert page.get_by_role("button", name="Send message").is_visible()
    page.close()

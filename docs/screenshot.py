"""Take the README's screenshot of the chat page: ``python docs/screenshot.py runs/demo``.

Starts ``talkplay serve RUN`` on a free loopback port, opens the page in headless Debian
Chromium (Playwright), sends the requests given with ``--say`` (two by default), likes
the first card of the first answer, and writes ``docs/screenshot.png``. Prints each
answer's cards and reply, so the caption can say what the picture shows.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CHROMIUM = "/usr/bin/chromium"
SAY = ["some lively irish dance tunes", "something slower, maybe a waltz"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--say", action="append", help="a request to type (repeat; default: two)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshot.png")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "talkplay.cli", "serve", str(args.run), "--port", str(port)]
    server = subprocess.Popen(cmd)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1000, "height": 1000})
            page.goto(url + "/")
            box = page.get_by_label("Message to TalkPlay (Enter sends, Shift+Enter adds a line)")
            for n, text in enumerate(args.say or SAY, start=1):
                box.fill(text)
                box.press("Enter")
                expect(page.locator(".msg.assistant")).to_have_count(n, timeout=120_000)
                expect(page.locator("#status")).to_be_hidden(timeout=300_000)
                answer = page.locator(".msg.assistant").nth(n - 1)
                print(f"you> {text}")
                for h3 in answer.locator(".card h3").all():
                    print("  card:", h3.inner_text())
                print("  reply:", answer.locator(".text").inner_text())
                if n == 1:
                    answer.locator(".card").first.get_by_role("button", name="Like").click()
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()

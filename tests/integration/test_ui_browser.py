"""The operator page in a real browser: Debian's Chromium (/usr/bin/chromium, never
a downloaded build) driven by Playwright, against the real API, worker and Flex
simulator. Signs in, sees handovers appear, opens one, makes one fail through the
simulator and replays it, signs out; takes a screenshot, into the test's temporary
directory, or with UPDATE_SCREENSHOT=1 over the README's (docs/images/ui.png), so
a test run does not change a tracked file.

Without the browser this FAILS (.ci/run installs it); set UI_BROWSER_TESTS=skip
to skip it on purpose.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_operator_lists import finished, hand_over
from tests.support.values import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[2]
README_SCREENSHOT = ROOT / "docs" / "images" / "ui.png"
CHROMIUM = Path(os.environ.get("UI_BROWSER", "/usr/bin/chromium"))
CHROMIUM_FOUND = CHROMIUM.is_file()  # at import: no blocking call inside the fixture
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLAIN = {"HANDOVER_UI_SECURE_COOKIE": "false"}  # http on loopback: no Secure cookie
WAIT_MS = 15_000  # the page refreshes every 3 s


@pytest.fixture
async def browser_page() -> AsyncIterator[tuple[Any, list[str]]]:
    """A Chromium page, and the console errors and page errors it reports."""
    if os.environ.get("UI_BROWSER_TESTS") == "skip":
        pytest.skip("UI_BROWSER_TESTS=skip")
    if not CHROMIUM_FOUND:
        pytest.fail(
            f"no browser at {CHROMIUM}: `apt-get install chromium` (.ci/run does), or set "
            "UI_BROWSER_TESTS=skip to skip the browser tests on purpose"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            yield page, problems
        finally:
            await browser.close()


async def test_sign_in_watch_open_replay_and_sign_out(
    browser_page, start_service, simulator, redis, tmp_path
):
    from playwright.async_api import expect

    page, problems = browser_page
    service = await start_service(**PLAIN)

    await page.goto(service.url + "/ui")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#dashboard")).to_be_hidden()

    await page.fill("#token", "not-the-admin-token-0000")
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#sign-in-error")).to_contain_text("not an admin token")
    assert page.url == service.url + "/ui"  # the token never went into a URL

    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#dashboard")).to_be_visible()
    cookies = await page.context.cookies()
    assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

    # Handovers appear by themselves, newest first.
    first = await hand_over(service, 1)
    await finished(service, redis, first, "succeeded")
    billing = await hand_over(service, 2, "/tools/flex-handover/billing")
    await finished(service, redis, billing, "succeeded")
    for handover_id in (first, billing):
        row = page.locator(f'#recent tbody tr[data-id="{handover_id}"]')
        await expect(row.locator(".state")).to_have_text("succeeded", timeout=WAIT_MS)
    assert await page.locator("#recent tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.id)"
    ) == [billing, first]
    await expect(page.locator("#count-succeeded_last_hour")).to_have_text("2", timeout=WAIT_MS)
    # One bar, or two if the successes fell either side of a minute's end.
    await expect(page.locator("#chart rect.ok").first).to_be_visible(timeout=WAIT_MS)
    assert 1 <= await page.locator("#chart rect.ok").count() <= 2

    # One fails at Flex; it is listed with its error and a replay button.
    simulator.fail_next(400, code=20001, message="Invalid channel")
    failed = await hand_over(service, 3)
    await finished(service, redis, failed, "failed")
    failed_row = page.locator(f'#failed tbody tr[data-id="{failed}"]')
    await expect(failed_row).to_contain_text("Invalid channel", timeout=WAIT_MS)
    await expect(page.locator("#count-failed_last_hour")).to_have_text("1", timeout=WAIT_MS)

    # Filters: by state, then by target (the targets come from the summary).
    await page.select_option("#state-filter", "failed")
    await expect(page.locator("#recent tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator(f'#recent tbody tr[data-id="{failed}"]')).to_have_count(1)
    await page.select_option("#state-filter", "recent")
    await page.select_option("#target-filter", "billing")
    await expect(page.locator("#recent tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator(f'#recent tbody tr[data-id="{billing}"]')).to_have_count(1)
    await page.select_option("#target-filter", "")
    await expect(page.locator("#recent tbody tr")).to_have_count(3, timeout=WAIT_MS)

    # Its detail: every field of the record, the last error, the identity masked.
    await page.click(f'#recent tbody tr[data-id="{failed}"] button')
    detail = page.locator("#detail")
    await expect(detail).to_be_visible()
    await expect(page.locator("#detail-id")).to_have_text(failed)
    names = await page.locator("#detail-fields dt").all_text_contents()
    record = await service.status(failed)
    assert names == list(record)
    await expect(detail).to_contain_text("Invalid channel")
    await expect(detail).to_contain_text("whatsapp:+14*******23")

    # Replay it from the page: the answer is shown, then the handover succeeds.
    await failed_row.locator("button.replay").click()
    await expect(page.locator("#replay-answer")).to_have_text(
        f"{failed}: replayed, queued (replay 1)"
    )
    await finished(service, redis, failed, "succeeded")
    await expect(page.locator(f'#recent tbody tr[data-id="{failed}"] .state')).to_have_text(
        "succeeded", timeout=WAIT_MS
    )
    await expect(failed_row).to_have_count(0, timeout=WAIT_MS)
    await expect(page.locator("#detail-fields")).to_contain_text("succeeded", timeout=WAIT_MS)

    # A script on the page that sends the cookie without the CSRF token is refused.
    status = await page.evaluate(
        "id => fetch('/handovers/' + id + '/replay', {method: 'POST'}).then(r => r.status)",
        failed,
    )
    assert status == 403
    assert (await service.status(failed))["replays"] == 1

    # One more that fails and stays failed, for the screenshot's replay button.
    simulator.fail_next(400, code=20001, message="Invalid channel")
    second = await hand_over(service, 4)
    await finished(service, redis, second, "failed")
    await expect(page.locator(f'#failed tbody tr[data-id="{second}"]')).to_have_count(
        1, timeout=WAIT_MS
    )

    assert "+14155550123" not in await page.content()  # no raw number anywhere
    await page.locator("#count-queued").scroll_into_view_if_needed()
    screenshot = (
        README_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "ui.png"
    )
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#sign-in-error")).to_have_text("Signed out.")
    await page.reload()
    await expect(page.locator("#sign-in")).to_be_visible()

    # The browser's only complaints: the refused sign-in (401) and replay (403)
    # above. No Content-Security-Policy violation, no script error.
    unexpected = [text for text in problems if not re.search(r"status of (401|403)", text)]
    assert unexpected == []

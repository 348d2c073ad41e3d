"""The staff console in a real browser (README, Console): the help article's walk through
Campaign → Contacts, live updates, accessibility, keyboard, phone and desktop sizes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Locator, Page, Route, expect

from app.events.outbox import Position
from tests.console.conftest import DESKTOP, PHONE, School, screenshot
from tests.support.live import LiveServer

NewPage = Callable[..., Page]
BODY = "Hi {first_name}, room 12 opens at 9."
# The simulator's numbers (README, The simulator: its last two digits), and what the contact
# shows once its first attempt is over: status label and failed reason label. The school
# retries after ten minutes, so the soft bounces stay Scheduled while the test runs.
FAMILIES = [
    ("+12015550100", "Ana", "Diaz", "Delivered", None),
    ("+12015550210", "Ben", "Lee", "Scheduled", "Re-attempting Delivery"),
    ("+12015550102", "Cy", "Ng", "Failed", "Unreachable Number"),
    ("+12015550106", "Di", "Oh", "Failed", "Unknown Error"),
    ("+12015550108", "Ed", "Po", "Pending", None),
    ("+12015550109", "Fay", "Qi", "Failed", "Opted out"),
    ("+12015550110", "Gus", "Wu", "Scheduled", "Re-attempting Delivery"),
]
SETTLE_MS = 30_000  # the simulator's receipts come a second apart; a busy machine is slower
LIVE_MS = 2_000  # the rule: a change is on screen within 2 s, without a reload


@pytest.fixture
def school(server: LiveServer) -> Iterator[School]:
    """A school of its own for each test (an opt-out holds in every campaign of a school),
    retrying soft bounces after ten minutes, with the families' list."""
    school = School(server, "Lincoln High")
    policy = {"base_delay_seconds": 600, "max_delay_seconds": 600}
    school.call("PATCH", "/v1/school", json={"retry_policy": policy})
    school.families = school.contact_list("Grade 5 families", [f[:3] for f in FAMILIES])
    yield school
    school.http.close()


def sign_in(page: Page, school: School) -> None:
    page.goto("/console")
    page.get_by_label("API key").fill(school.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Active campaigns")).to_be_visible()


def contacts(page: Page) -> Locator:
    return page.get_by_role("table", name="Contacts")


def row(page: Page, phone: str) -> Locator:
    return contacts(page).get_by_role("row").filter(has_text=phone)


def shown_phones(page: Page) -> list[str]:
    """The phones of the rows the Contacts table shows, once it is not loading."""
    expect(contacts(page)).not_to_have_attribute("aria-busy", "true")
    cells = contacts(page).locator("tbody td:first-child").all_inner_texts()
    return sorted(c for c in cells if c.startswith("+"))


def settled(page: Page) -> None:
    """Wait, watching the page (no reload), until every family shows its outcome, and the
    counts with them."""
    for phone, _, _, label, reason in FAMILIES:
        status = row(page, phone).locator(".status")
        expect(status).to_have_text(label, timeout=SETTLE_MS)
        if reason:
            expect(row(page, phone).get_by_role("button", name=reason)).to_be_visible()
    labels = [family[3] for family in FAMILIES]
    for label in ("Delivered", "Pending", "Scheduled", "Still in Queue", "Failed"):
        count = page.locator(".counts .count").filter(has=page.get_by_text(label, exact=True))
        expect(count.locator("dd")).to_have_text(str(labels.count(label)))


def open_campaign(page: Page, name: str) -> None:
    page.get_by_role("link", name="Campaigns", exact=True).first.click()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()


def test_the_help_article_walk(new_page: NewPage, school: School) -> None:
    page = new_page()
    page.goto("/console")
    expect(page.get_by_role("navigation", name="Console")).to_be_hidden()  # until signed in
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    refused = httpx.get(f"{school.http.base_url}/v1/school", headers={"Authorization": "Bearer x"})
    expect(page.get_by_role("alert")).to_have_text(refused.json()["detail"])
    expect(page.get_by_label("API key")).to_be_focused()
    sign_in(page, school)

    # A new campaign: the body's live preview counts its segments; then launch it.
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name").fill("Room change")
    page.get_by_label("Contact list").select_option(label="Grade 5 families")
    page.get_by_label("Message").fill(BODY)
    preview = page.locator("output.preview")
    expect(preview).to_contain_text("Hi Ana, room 12 opens at 9.")
    expect(preview).to_contain_text("GSM-7 · 27 characters · 1 segment")
    page.get_by_label("Message").fill(BODY + " Olá 🙂")
    expect(preview).to_contain_text("UCS-2")
    page.get_by_label("Message").fill(BODY)
    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_role("heading", name="Room change")).to_be_visible()
    expect(page.locator(".summary .badge")).to_have_text("draft")
    page.get_by_role("button", name="Launch").click()
    expect(page.locator(".summary .badge")).to_have_text(re.compile("active|complete"))
    campaign_id = page.url.rsplit("/", 1)[1]

    # Contacts reach Delivered, Scheduled (re-attempting), Pending and Failed, live.
    settled(page)
    counts = page.locator(".counts")
    expect(counts.locator(".count").filter(has_text="Failed").locator("dd")).to_have_text("3")
    expect(counts.locator(".count").filter(has_text="Delivered").locator("dd")).to_have_text("1")

    # One filter control per label: each shows exactly the contacts the API lists.
    for label, status in [
        ("Delivered", "delivered"),
        ("Pending", "pending"),
        ("Scheduled", "scheduled"),
        ("Still in Queue", "queued"),
        ("Failed", "failed"),
        ("All", None),
    ]:
        page.get_by_role("button", name=label, exact=True).click()
        expect(page.get_by_role("button", name=label, exact=True)).to_have_attribute(
            "aria-pressed", "true"
        )
        params = {"status": status} if status else {}
        expected = sorted(c["phone"] for c in school.contacts(campaign_id, **params))
        assert shown_phones(page) == expected, label
    page.get_by_label("Failed reason").select_option(label="Unreachable Number")
    expect(contacts(page).locator("tbody tr")).to_have_count(1)
    assert shown_phones(page) == ["+12015550102"]
    page.get_by_label("Failed reason").select_option(label="Any")
    expect(contacts(page).locator("tbody tr")).to_have_count(len(FAMILIES))
    page.get_by_label("Search").fill("Po")
    expect(contacts(page).locator("tbody tr")).to_have_count(1)
    assert shown_phones(page) == ["+12015550108"]
    page.get_by_label("Search").fill("")
    expect(contacts(page).locator("tbody tr")).to_have_count(len(FAMILIES))

    # A failed reason's definition, on hover and on keyboard focus.
    reason = row(page, "+12015550102").get_by_role("button", name="Unreachable Number")
    definition = row(page, "+12015550102").get_by_role("tooltip")
    expect(definition).to_be_hidden()
    reason.hover()
    expect(definition).to_be_visible()
    expect(definition).to_have_text("This number is switched off or otherwise unavailable")
    expect(reason).to_have_accessible_description(
        "This number is switched off or otherwise unavailable"
    )
    page.mouse.move(0, 0)
    expect(definition).to_be_hidden()
    reason.focus()
    expect(definition).to_be_visible()
    page.keyboard.press("Escape")
    expect(definition).to_be_hidden()

    # Preview: the rendered text, its encoding and segments, on any row.
    row(page, "+12015550100").get_by_role("button", name="Preview").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Hi Ana, room 12 opens at 9.")
    expect(dialog).to_contain_text("GSM-7")
    expect(dialog).to_contain_text("1 segment")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # Opt-Out, confirmed: the Scheduled contact becomes Failed · Opted out.
    gus = row(page, "+12015550110")
    gus.get_by_role("button", name="Opt-Out").click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(gus.locator(".status")).to_have_text("Scheduled")
    gus.get_by_role("button", name="Opt-Out").click()
    expect(dialog).to_contain_text("+12015550110")
    dialog.get_by_role("button", name="Opt out").click()
    expect(gus.locator(".status")).to_have_text("Failed")
    expect(gus.get_by_role("button", name="Opted out")).to_be_visible()

    # Resend is offered where the reason allows it, and sends again.
    expect(row(page, "+12015550102").get_by_role("button", name="Resend")).to_have_count(0)
    expect(row(page, "+12015550109").get_by_role("button", name="Resend")).to_have_count(0)
    di = row(page, "+12015550106")
    di.get_by_role("button", name="Resend").click()
    expect(di.locator("td").nth(4)).to_have_text("2", timeout=SETTLE_MS)
    expect(di.locator(".status")).to_have_text("Failed", timeout=SETTLE_MS)

    # Resend failed: those whose reason allows it; the others are counted, by reason.
    page.get_by_role("button", name="Resend failed").click()
    expect(page.locator(".notice")).to_have_text(
        "1 queued to be sent again. Not resendable, skipped: Unreachable Number: 1, Opted out: 2."
    )

    # Close, then Archive: statuses stay as they were; the API's refusals are shown.
    page.get_by_role("button", name="Close campaign").click()
    dialog.get_by_role("button", name="Close campaign").click()
    expect(page.locator(".summary .badge")).to_have_text("closed")
    page.get_by_role("button", name="Archive").click()
    dialog.get_by_role("button", name="Archive").click()
    expect(page.locator(".summary .badge")).to_have_text("archived")
    before = school.contacts(campaign_id)
    expect(row(page, "+12015550210").locator(".status")).to_have_text("Scheduled")
    page.get_by_role("button", name="Resend failed").click()
    refused = school.http.post(f"/v1/campaigns/{campaign_id}/resend-failed")
    assert refused.status_code == 409
    expect(page.get_by_role("alert")).to_have_text(refused.json()["detail"])

    # Export CSV: the file is the API's export.
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    exported = school.call("GET", f"/v1/campaigns/{campaign_id}/contacts.csv")
    assert download.value.suggested_filename == f"campaign-{campaign_id}.csv"
    assert download.value.path().read_bytes() == exported.content
    assert school.contacts(campaign_id) == before  # frozen

    # The campaigns: archived ones are in the Archived view only.
    page.get_by_role("link", name="Campaigns", exact=True).first.click()
    expect(page.get_by_role("table", name="Campaigns")).not_to_contain_text("Room change")
    page.get_by_role("link", name="Archived").click()
    archived = (
        page.get_by_role("table", name="Campaigns")
        .get_by_role("row")
        .filter(has_text="Room change")
    )
    expect(archived).to_contain_text("archived")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_change_shows_within_two_seconds_without_a_reload(
    new_page: NewPage, school: School
) -> None:
    campaign_id = school.launched("Bus times", BODY, school.families)
    page = new_page()
    sign_in(page, school)
    open_campaign(page, "Bus times")
    settled(page)
    page.evaluate("window.notReloaded = true")
    failed = page.locator(".counts .count").filter(has_text="Failed").locator("dd")
    expect(failed).to_have_text("3")

    ben = row(page, "+12015550210")
    rid = next(c["id"] for c in school.contacts(campaign_id) if c["phone"] == "+12015550210")
    school.call("POST", f"/v1/campaigns/{campaign_id}/contacts/{rid}/opt-out", 201)
    deadline = time.monotonic() + LIVE_MS / 1000

    def left() -> float:  # of the 2 s since the change, in ms
        return max(1.0, (deadline - time.monotonic()) * 1000)

    expect(ben.locator(".status")).to_have_text("Failed", timeout=left())
    expect(ben.get_by_role("button", name="Opted out")).to_be_visible(timeout=left())
    expect(failed).to_have_text("4", timeout=left())
    assert page.evaluate("window.notReloaded") is True


# Records, in the page, when each watched phone's row first shows its label (Date.now()).
WATCH = """(watched) => {
  window.shownAt = {};
  const look = () => {
    for (const tr of document.querySelectorAll("tbody tr")) {
      const phone = tr.querySelector("td")?.textContent.trim();
      const label = tr.querySelector(".status")?.textContent.trim();
      if (watched[phone] === label && !(phone in window.shownAt)) {
        window.shownAt[phone] = Date.now();
      }
    }
  };
  new MutationObserver(look).observe(document.body, {
    subtree: true, childList: true, characterData: true,
  });
  look();
}"""


def test_receipts_applied_while_the_page_is_open_show_within_two_seconds(
    new_page: NewPage, school: School
) -> None:
    """The simulator's receipts take the path a provider's webhooks take (README, The
    simulator): stored, then applied. Each final one is on the open page within 2 s of
    being applied (the contact's `updated_at`), with no reload."""
    made = school.call(
        "POST",
        "/v1/campaigns",
        201,
        json={"name": "Field trip", "body": BODY, "contact_list_id": school.families},
    )
    page = new_page()
    sign_in(page, school)
    open_campaign(page, "Field trip")
    page.evaluate("window.notReloaded = true")
    by_receipt = {"+12015550100": "Delivered", "+12015550102": "Failed", "+12015550106": "Failed"}
    page.evaluate(WATCH, by_receipt)
    page.get_by_role("button", name="Launch").click()
    deadline = time.monotonic() + SETTLE_MS / 1000
    while len(shown := page.evaluate("window.shownAt")) < len(by_receipt):
        assert time.monotonic() < deadline, shown
        page.wait_for_timeout(100)  # (wait_for_function evaluates a string: the CSP says no)
    for contact in school.contacts(made["id"]):
        if contact["phone"] in by_receipt:
            applied = datetime.fromisoformat(contact["updated_at"]).timestamp() * 1000
            assert shown[contact["phone"]] - applied <= LIVE_MS, (contact, shown)
    assert page.evaluate("window.notReloaded") is True


def place(sse_id: str) -> Position:
    found = Position.parse(sse_id)
    assert found is not None, sse_id
    return found


def test_a_dropped_stream_resumes_where_it_left_off(new_page: NewPage, school: School) -> None:
    campaign_id = school.launched("Bus times", BODY, school.families)
    outcome = {phone: label for phone, _, _, label, _ in FAMILIES}
    deadline = time.monotonic() + SETTLE_MS / 1000
    while {c["phone"]: c["status_label"] for c in school.contacts(campaign_id)} != outcome:
        assert time.monotonic() < deadline, school.contacts(campaign_id)
        time.sleep(0.2)
    gus = next(c["id"] for c in school.contacts(campaign_id) if c["phone"] == "+12015550110")
    # The stream's first event, as the API sends it.
    with school.http.stream("GET", f"/v1/campaigns/{campaign_id}/events") as stream:
        lines = stream.iter_lines()
        first = [next(lines), next(lines)]
    assert first[0].startswith("id: "), first
    position = first[0].removeprefix("id: ")

    # The console's first connection ends after that event; its next one is held while a
    # change is made, with the page open and showing the contact as it was.
    held: list[Route] = []

    def connection(route: Route) -> None:
        if not held:
            route.fulfill(content_type="text/event-stream", body="\n".join([*first, "", ""]))
        held.append(route)

    page = new_page()
    page.route("**/events?token=*", connection)
    sign_in(page, school)
    open_campaign(page, "Bus times")
    gus_status = row(page, "+12015550110").locator(".status")
    expect(gus_status).to_have_text("Scheduled", timeout=SETTLE_MS)
    expect(page.locator(".live")).to_have_text("Reconnecting…")
    deadline = time.monotonic() + 10
    while len(held) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # Playwright hands the route over meanwhile
    assert len(held) == 2, "the console did not reconnect"
    school.call("POST", f"/v1/campaigns/{campaign_id}/contacts/{gus}/opt-out", 201)
    page.wait_for_timeout(500)
    expect(gus_status).to_have_text("Scheduled")  # nothing tells the page but the stream
    held[1].continue_()
    expect(gus_status).to_have_text("Failed", timeout=SETTLE_MS)
    expect(row(page, "+12015550110").get_by_role("button", name="Opted out")).to_be_visible()
    # The first connection started where the stream was when the page opened (none of the
    # campaign's history); the next one where the first left off.
    now = school.call("POST", f"/v1/campaigns/{campaign_id}/events/token")["last_event_id"]
    started = held[0].request.headers["last-event-id"]
    assert place(position) <= place(started) <= place(now), (position, started, now)
    assert held[1].request.headers["last-event-id"] == position


def test_a_remembered_position_the_stream_refuses_is_dropped_not_retried(
    new_page: NewPage, school: School
) -> None:
    """A tab that remembers a position the stream no longer takes (an older Campanile's
    numeric SSE id) gets the stream's 400 once; the console forgets it and goes live from
    where the stream was as the page read the contacts, rather than retry it for ever."""
    campaign_id = school.launched("Bus times", BODY, school.families)
    gus = next(c["id"] for c in school.contacts(campaign_id) if c["phone"] == "+12015550110")
    asked: list[str | None] = []  # each stream connection's Last-Event-ID

    def connection(route: Route) -> None:
        asked.append(route.request.headers.get("last-event-id"))
        route.continue_()

    page = new_page()
    page.route("**/events?token=*", connection)
    sign_in(page, school)
    page.evaluate(f"sessionStorage.setItem('campanile.lastEventId.{campaign_id}', '1042')")
    open_campaign(page, "Bus times")
    expect(page.locator(".live")).to_have_text("Live", timeout=SETTLE_MS)
    assert asked[0] == "1042", asked
    assert len(asked) == 2 and asked[1] is not None, asked
    place(asked[1])  # a position the stream sent
    # Live from there: a change made now shows without a reload.
    school.call("POST", f"/v1/campaigns/{campaign_id}/contacts/{gus}/opt-out", 201)
    expect(row(page, "+12015550110").get_by_role("button", name="Opted out")).to_be_visible(
        timeout=SETTLE_MS
    )
    assert page.evaluate(f"sessionStorage.getItem('campanile.lastEventId.{campaign_id}')") != "1042"


def test_a_large_campaign_is_paged_through_the_api_cursors(
    new_page: NewPage, school: School
) -> None:
    # Numbers ending in 07 are refused at once (README, The simulator): 60 Failed contacts.
    phones = [f"+1201555{n:02d}07" for n in range(10, 70)]
    whole_school = school.contact_list("Whole school", [(p, "Kid", str(p[-4:])) for p in phones])
    campaign_id = school.launched("Picture day", BODY, whole_school)
    deadline = time.monotonic() + SETTLE_MS / 1000
    while len(school.contacts(campaign_id, status="failed")) < len(phones):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    page = new_page()
    sign_in(page, school)
    open_campaign(page, "Picture day")
    shown = page.locator(".shown")
    expect(shown).to_have_text("Showing 50 of 60")
    page.get_by_role("button", name="Failed", exact=True).click()
    expect(shown).to_have_text("Showing 50 of 60")
    page.get_by_role("button", name="Show more contacts").click()
    expect(shown).to_have_text("Showing 60 of 60")
    expect(page.get_by_role("button", name="Show more contacts")).to_be_hidden()
    assert shown_phones(page) == sorted(phones)


def test_every_page_passes_axe_at_both_sizes(new_page: NewPage, school: School) -> None:
    school.launched("Bus times", BODY, school.families)
    axe = Axe()

    def check(page: Page, name: str, *, full_page: bool = True) -> None:
        results = axe.run(page)
        serious = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{name}: {serious}"
        # Nothing runs off the side of the screen (a page scrolled sideways on a phone).
        wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert wide[0] <= wide[1], f"{name}: {wide[0]} px wide in a {wide[1]} px window"
        screenshot(page, name, full_page=full_page)

    seen: dict[str, list[list[str]]] = {}
    for viewport in (DESKTOP, PHONE):
        page = new_page(viewport)
        page.goto("/console")
        expect(page.get_by_label("API key")).to_be_visible()
        check(page, "sign-in")
        sign_in(page, school)
        check(page, "campaigns")
        page.get_by_role("link", name="Archived").click()
        expect(page.get_by_role("heading", name="Archived campaigns")).to_be_visible()
        check(page, "archived")
        page.get_by_role("link", name="New campaign").click()
        page.get_by_label("Contact list").select_option(label="Grade 5 families")
        page.get_by_label("Message").fill(BODY)
        expect(page.locator("output.preview")).to_contain_text("1 segment")
        check(page, "new-campaign")
        open_campaign(page, "Bus times")
        settled(page)
        check(page, "contacts")
        row(page, "+12015550102").get_by_role("button", name="Unreachable Number").focus()
        check(page, "definition")
        row(page, "+12015550100").get_by_role("button", name="Preview").click()
        expect(page.get_by_role("dialog")).to_contain_text("segment")
        check(page, "preview", full_page=False)
        page.keyboard.press("Escape")
        # The same data at both sizes: every row's cells, as text.
        seen[f"{viewport['width']}"] = [
            r.locator("td").all_inner_texts() for r in contacts(page).locator("tbody tr").all()
        ]
    assert seen["390"] == seen["1280"]
    assert len(seen["390"]) == len(FAMILIES)


def test_the_main_flow_with_the_keyboard_alone(new_page: NewPage, school: School) -> None:
    school.launched("Bus times", BODY, school.families)
    page = new_page()
    page.goto("/console")

    def tab_to(target: Locator, limit: int = 60) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if target.evaluate("element => element === document.activeElement"):
                return
        raise AssertionError(f"Tab never reached {target}")

    tab_to(page.get_by_label("API key"))
    page.keyboard.type(school.key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Active campaigns")).to_be_visible()
    tab_to(page.get_by_role("link", name="Bus times"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Bus times")).to_be_visible()
    settled(page)

    gus = row(page, "+12015550110")
    tab_to(gus.get_by_role("button", name="Opt-Out"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog").get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(gus.get_by_role("button", name="Opted out")).to_be_visible()
    expect(gus.get_by_role("button", name="Opt-Out")).to_be_focused()

    tab_to(page.get_by_role("button", name="Failed", exact=True))
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Failed", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(contacts(page).locator("tbody tr")).to_have_count(4)
    cy = row(page, "+12015550102")
    tab_to(cy.get_by_role("button", name="Unreachable Number"))
    expect(cy.get_by_role("tooltip")).to_be_visible()
    tab_to(cy.get_by_role("button", name="Preview"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_contain_text("Hi Cy, room 12 opens at 9.")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(cy.get_by_role("button", name="Preview")).to_be_focused()
    tab_to(page.get_by_role("button", name="Export CSV"), limit=120)
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert download.value.suggested_filename.endswith(".csv")


def test_console_responses_allow_only_its_own_scripts(server: LiveServer) -> None:
    for path in ("/console", "/console/console.js", "/console/console.css"):
        response = httpx.get(server.base_url + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "connect-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        again = httpx.get(
            server.base_url + path, headers={"If-None-Match": response.headers["etag"]}
        )
        assert again.status_code == 304, path  # the browser keeps its copy while it is current
    assert httpx.get(server.base_url + "/console/secrets.py").status_code == 404
    page = httpx.get(server.base_url + "/console").text
    assert "<script>" not in page and "style=" not in page

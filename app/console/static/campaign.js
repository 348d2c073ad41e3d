// A campaign: its status and counts, its actions, and the Contacts table of the help article
// (filters, failed reasons with their definitions, Preview, Opt-Out, Resend), kept live by
// the campaign's stream (stream.js).

import { api, query } from "./api.js";
import { confirmDialog, formatNumber, h, openDialog, stamp, time } from "./dom.js";
import { openStream } from "./stream.js";

const PAGE_SIZE = 50;
// The status filter: one control per label (the status it shows, and the count it has).
const FILTERS = [
  ["All", null, "total"],
  ["Delivered", "delivered", "delivered"],
  ["Pending", "pending", "pending"],
  ["Scheduled", "scheduled", "scheduled"],
  ["Still in Queue", "queued", "queued"],
  ["Failed", "failed", "failed"],
];
const COLUMNS = ["Phone", "Name", "Status", "Failed reason", "Attempts", "Last update", "Actions"];
const COUNTS_EVERY_MS = 500; // counts are read again at most this often while events come

let tooltips = 0;

/** Show campaign `id` in `main`; resolves to what stops the page (its live stream). */
export async function showCampaign(main, id, showError) {
  const path = `/v1/campaigns/${encodeURIComponent(id)}`;
  // Where the live stream is before the contacts are read: it will bring every change
  // after that, and none of the campaign's history before it.
  const streamToken = await api(`${path}/events/token`, { method: "POST" });
  // The first screen asks for everything else it shows at once.
  let loading = new AbortController(); // that of the contacts request in flight
  const firstPage = api(`${path}/contacts?limit=${PAGE_SIZE}`, { signal: loading.signal });
  firstPage.catch(() => {}); // awaited below, unless the campaign's own request fails first
  const campaign = await api(path);
  let reasons = []; // the failed-reason catalog, asked for once the first screen is up
  const filter = { status: null, failed_reason: "", q: "" };
  const rows = new Map(); // recipient id -> { tr, recipient }
  let cursor = null;

  let current = campaign;

  const notice = h("p", { class: "notice", role: "status" });
  const say = (text) => notice.replaceChildren(text);
  const act = (work) => async () => {
    showError(null);
    try {
      await work();
    } catch (error) {
      if (error.name !== "AbortError") showError(error);
    }
  };

  // -- the campaign: heading, status, counts, actions --------------------------------------
  const statusBadge = h("span", { class: "badge" });
  const launched = h("span");
  const live = h("span", { class: "live", role: "status" });
  const counts = h("dl", { class: "counts" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Campaign actions" });

  function showSummary(c) {
    current = c;
    statusBadge.textContent = c.status;
    launched.replaceChildren(c.launched_at ? "Launched " : "Not launched", c.launched_at ? time(c.launched_at) : "");
    counts.replaceChildren(
      ...FILTERS.map(([label, status, key]) =>
        h(
          "div",
          { class: `count ${status ? "group-" + group(status) : ""}` },
          h("dt", {}, label === "All" ? "Total" : label),
          h("dd", {}, formatNumber(c.counts[key])),
        ),
      ),
    );
    for (const button of actions.querySelectorAll("[data-draft]")) {
      button.hidden = (button.dataset.draft === "yes") !== (c.status === "draft");
    }
    showShown();
  }

  const actionButton = (label, draft, work) =>
    h("button", { type: "button", "data-draft": draft, onclick: act(work) }, label);
  actions.append(
    actionButton("Launch", "yes", async () => {
      showSummary(await api(`${path}/launch`, { method: "POST" }));
      say("Launched.");
      await reload();
    }),
    actionButton("Resend failed", "no", async () => {
      const report = await api(`${path}/resend-failed`, { method: "POST" });
      const skipped = Object.entries(report.skipped).map(
        ([code, n]) => `${reasonLabel(code)}: ${formatNumber(n)}`,
      );
      say(
        `${formatNumber(report.queued)} queued to be sent again.` +
          (skipped.length ? ` Not resendable, skipped: ${skipped.join(", ")}.` : ""),
      );
    }),
    actionButton("Close campaign", "no", async () => {
      const ok = await confirmDialog(
        "Close this campaign?",
        "No further attempts start; contacts keep their status, and receipts for messages already sent still update them.",
        "Close campaign",
      );
      if (!ok) return;
      showSummary(await api(`${path}/close`, { method: "POST" }));
      say("Campaign closed.");
    }),
    actionButton("Archive", "no", async () => {
      const ok = await confirmDialog(
        "Archive this campaign?",
        "It leaves the active list and every contact's status stays as it is now.",
        "Archive",
      );
      if (!ok) return;
      showSummary(await api(`${path}/archive`, { method: "POST" }));
      say("Campaign archived: statuses are frozen.");
    }),
    actionButton("Export CSV", "no", async () => {
      const response = await api(`${path}/contacts.csv`, { raw: true });
      const disposition = response.headers.get("Content-Disposition") || "";
      const name = disposition.match(/filename="([^"]+)"/)?.[1] || `campaign-${id}.csv`;
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
      say(`Exported ${name}.`);
    }),
  );

  // -- the filters ---------------------------------------------------------------------------
  const statusButtons = FILTERS.map(([label, status]) =>
    h(
      "button",
      {
        type: "button",
        class: "filter",
        "aria-pressed": String(status === null),
        onclick: () => {
          filter.status = status;
          for (const [i, b] of statusButtons.entries()) {
            b.setAttribute("aria-pressed", String(FILTERS[i][1] === status));
          }
          act(reload)();
        },
      },
      label,
    ),
  );
  const reasonSelect = h("select", { id: "failed-reason" }, h("option", { value: "" }, "Any"));
  reasonSelect.addEventListener("change", () => {
    filter.failed_reason = reasonSelect.value;
    act(reload)();
  });
  const search = h("input", {
    id: "contacts-search",
    type: "search",
    maxlength: 100,
    autocomplete: "off",
    placeholder: "Phone or name",
  });
  let typing = null;
  search.addEventListener("input", () => {
    table.setAttribute("aria-busy", "true"); // what it shows is about to change
    clearTimeout(typing);
    typing = setTimeout(() => {
      filter.q = search.value.trim();
      act(reload)();
    }, 250);
  });
  const filters = h(
    "div",
    { class: "filters" },
    h("div", { role: "group", "aria-label": "Status", class: "segmented" }, statusButtons),
    h("div", { class: "field inline" }, h("label", { for: "failed-reason" }, "Failed reason"), reasonSelect),
    h("div", { class: "field inline" }, h("label", { for: "contacts-search" }, "Search"), search),
  );

  // -- the Contacts table --------------------------------------------------------------------
  const tbody = h("tbody", { role: "rowgroup" });
  const table = h(
    "table",
    { role: "table", "aria-label": "Contacts", class: "cards contacts" },
    h(
      "thead",
      { role: "rowgroup" },
      h("tr", { role: "row" }, COLUMNS.map((c) => h("th", { role: "columnheader", scope: "col" }, c))),
    ),
    tbody,
  );
  const shown = h("p", { class: "shown" });
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "Show more contacts");
  more.addEventListener("click", act(() => load(false)));

  function showShown() {
    const known = !filter.failed_reason && !filter.q;
    const key = FILTERS.find((f) => f[1] === filter.status)[2];
    const of = known && current.counts ? ` of ${formatNumber(current.counts[key])}` : "";
    shown.textContent = `Showing ${formatNumber(rows.size)}${of}`;
  }

  /** Show the first page of what the filters choose (`fresh`), or the next page; `answer`:
   * that page, already asked for. */
  async function load(fresh, answer = null) {
    table.setAttribute("aria-busy", "true");
    if (!answer) {
      loading.abort();
      loading = new AbortController();
      const params = query({
        status: filter.status,
        failed_reason: filter.failed_reason,
        q: filter.q,
        limit: PAGE_SIZE,
        cursor: fresh ? null : cursor,
      });
      answer = api(`${path}/contacts${params}`, { signal: loading.signal });
    }
    const page = await answer;
    if (fresh) {
      rows.clear();
      tbody.replaceChildren();
    }
    for (const recipient of page.items) {
      const tr = h("tr", { role: "row", "data-id": recipient.id });
      rows.set(recipient.id, { tr, recipient: null });
      fillRow(rows.get(recipient.id), recipient);
      tbody.append(tr);
    }
    if (!rows.size) {
      const empty = current.status === "draft" ? "No contacts until the campaign is launched." : "No contacts match.";
      tbody.append(h("tr", { role: "row" }, h("td", { role: "cell", colspan: COLUMNS.length }, empty)));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    table.removeAttribute("aria-busy");
    showShown();
    performance.mark("contacts-rendered"); // bench/console.py times the page by it
  }
  const reload = () => load(true);

  function fillRow(row, r) {
    const before = row.recipient;
    row.recipient = r;
    const cell = (label, ...content) => h("td", { role: "cell", "data-label": label }, ...content);
    const reasonChanged = !before || before.failed_reason?.definition !== r.failed_reason?.definition;
    const cells = row.tr.children;
    if (!cells.length) {
      row.tr.append(
        cell("Phone", r.phone),
        cell("Name", [r.first_name, r.last_name].filter(Boolean).join(" ") || "—"),
        cell("Status"),
        cell("Failed reason"),
        cell("Attempts"),
        cell("Last update"),
        cell("Actions", rowActions(row)),
      );
    }
    cells[2].replaceChildren(h("span", { class: `status group-${r.status_group}` }, r.status_label));
    if (reasonChanged) cells[3].replaceChildren(reasonCell(r.failed_reason));
    cells[4].textContent = formatNumber(r.attempts);
    cells[5].replaceChildren(time(r.updated_at));
    const resendable = r.status === "failed" && r.failed_reason?.resendable === true;
    row.tr.querySelector("[data-resend]").hidden = !resendable;
  }

  function rowActions(row) {
    const contact = () => `${path}/contacts/${encodeURIComponent(row.recipient.id)}`;
    const refresh = async () => fillRow(row, await api(contact()));
    return h(
      "div",
      { class: "row-actions" },
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          onclick: act(async () => {
            const p = await api(`${contact()}/preview`);
            const segments = `${p.segments} segment${p.segments === 1 ? "" : "s"}`;
            await openDialog(
              `Message to ${row.recipient.phone}`,
              [
                h("p", { class: "message" }, p.text),
                h(
                  "dl",
                  { class: "facts" },
                  h("dt", {}, "Encoding"), h("dd", {}, p.encoding),
                  h("dt", {}, "Characters"), h("dd", {}, formatNumber(p.characters)),
                  h("dt", {}, "Segments"), h("dd", {}, segments),
                ),
              ],
              [["Close", "close", "primary"]],
            );
          }),
        },
        "Preview",
      ),
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          onclick: act(async () => {
            const phone = row.recipient.phone;
            const ok = await confirmDialog(
              `Opt out ${phone}?`,
              "This number gets nothing more from the school, in any campaign, until it opts back in.",
              "Opt out",
            );
            if (!ok) return;
            await api(`${contact()}/opt-out`, { method: "POST" });
            say(`${phone} is opted out.`);
            await refresh();
          }),
        },
        "Opt-Out",
      ),
      h(
        "button",
        {
          type: "button",
          "data-resend": true,
          hidden: true,
          onclick: act(async () => {
            fillRow(row, await api(`${contact()}/resend`, { method: "POST" }));
            say(`${row.recipient.phone} is queued to be sent again.`);
          }),
        },
        "Resend",
      ),
    );
  }

  function reasonLabel(code) {
    return reasons.find((r) => r.code === code)?.label || code;
  }

  // -- live: the campaign's stream -----------------------------------------------------------
  let countsTimer = null;
  let countsAgain = false;
  async function refreshCounts() {
    // Counts change with every contact's change, but come only with the campaign's own
    // events: read them again at once, then at most every COUNTS_EVERY_MS while changes come.
    if (countsTimer) return void (countsAgain = true);
    countsTimer = setTimeout(() => {
      countsTimer = null;
      if (countsAgain) {
        countsAgain = false;
        refreshCounts();
      }
    }, COUNTS_EVERY_MS);
    try {
      showSummary(await api(path));
    } catch {
      // the next change tries again
    }
  }

  function onEvent(event) {
    const data = event.data;
    if (event.type === "campaign.updated") {
      if (stamp(data.updated_at) >= stamp(current.updated_at)) showSummary(data);
      return;
    }
    if (event.type !== "recipient.updated") return;
    refreshCounts();
    const row = rows.get(String(data.id));
    // The stream replays what came before too: keep whichever is newer.
    if (row && stamp(data.updated_at) >= stamp(row.recipient.updated_at)) fillRow(row, data);
  }

  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: current.status === "archived" ? "#/archived" : "#/" }, "Campaigns")),
    h("h1", {}, campaign.name),
    h("p", { class: "summary" }, "Status: ", statusBadge, " · ", launched, " · ", live),
    h("p", { class: "body" }, campaign.body),
    counts,
    actions,
    notice,
    h("h2", {}, "Contacts"),
    filters,
    h("div", { class: "table-wrap" }, table),
    h("div", { class: "paging" }, shown, more),
  );
  document.title = `${campaign.name} · Campanile console`;
  showSummary(campaign);
  await load(true, firstPage);
  reasons = await api("/v1/failed-reasons");
  reasonSelect.append(...reasons.map((r) => h("option", { value: r.code }, r.label)));
  // Live once the first screen is up, from where the stream was before the contacts were read.
  const stream = openStream(
    id,
    onEvent,
    (state) => {
      live.textContent = { live: "Live", reconnecting: "Reconnecting…", ended: "Not live" }[state];
      live.dataset.state = state;
    },
    streamToken,
  );
  return () => {
    stream.close();
    loading.abort();
    clearTimeout(countsTimer);
  };

  function reasonCell(reason) {
    if (!reason) return "—";
    const tip = `reason-tip-${++tooltips}`;
    const trigger = h("button", { type: "button", class: "reason", "aria-describedby": tip }, reason.label);
    const wrap = h(
      "span",
      { class: "reason-wrap" },
      trigger,
      h("span", { role: "tooltip", id: tip, class: "tooltip" }, reason.definition),
    );
    // Escape hides the definition until focus or the pointer leaves (WCAG 1.4.13).
    trigger.addEventListener("keydown", (e) => e.key === "Escape" && wrap.classList.add("dismissed"));
    trigger.addEventListener("blur", () => wrap.classList.remove("dismissed"));
    wrap.addEventListener("mouseleave", () => wrap.classList.remove("dismissed"));
    return wrap;
  }
}

function group(status) {
  return { delivered: "delivered", failed: "failed" }[status] || "in_progress";
}

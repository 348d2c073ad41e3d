// The staff console: sign-in, the campaigns, a new campaign; a campaign's contacts are in
// campaign.js. Pages are chosen by the URL's fragment (#/, #/archived, #/new, #/campaigns/ID).

import { api, session } from "./api.js";
import { showCampaign } from "./campaign.js";
import { formatNumber, h, time } from "./dom.js";

const main = document.getElementById("main");
const errorBox = document.getElementById("error");
let leavePage = () => {}; // what the current page must stop (its live stream)

export function showError(error) {
  errorBox.replaceChildren(error ? h("p", {}, error.message || String(error)) : "");
}

function setPage(title, ...content) {
  leavePage();
  leavePage = () => {};
  showError(null);
  document.title = `${title} · Campanile console`;
  main.replaceChildren(...content);
}

function signInPage(message) {
  const input = h("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const form = h(
    "form",
    { class: "card narrow" },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { class: "hint" }, "Kept in this browser tab only, until you sign out or close it."),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.signIn(input.value.trim());
    try {
      await start();
      await route();
    } catch (error) {
      session.signOut();
      showError(error);
      document.getElementById("api-key").focus(); // the form may be a new one by now
    }
  });
  setPage("Sign in", h("h1", {}, "Sign in"), message ? h("p", {}, message) : "", form);
  input.focus();
}

/** The signed-in shell: the school's name, the navigation and "Sign out". */
async function start() {
  const school = await api("/v1/school");
  document.getElementById("school").textContent = school.name;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
}

function signOut(message) {
  session.signOut();
  document.getElementById("school").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  signInPage(message);
}

async function route() {
  if (!session.key()) return signInPage();
  const path = location.hash.replace(/^#/, "") || "/";
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.getAttribute("href") === `#${path}`;
    link.toggleAttribute("aria-current", current);
    if (current) link.setAttribute("aria-current", "page");
  }
  const campaign = path.match(/^\/campaigns\/([^/]+)$/);
  try {
    if (campaign) {
      setPage("Campaign", h("p", {}, "Loading…"));
      leavePage = await showCampaign(main, decodeURIComponent(campaign[1]), showError);
    } else if (path === "/new") await newCampaignPage();
    else await campaignsPage(path === "/archived");
  } catch (error) {
    showError(error);
  }
}

const campaignsPerPage = 50;

async function campaignsPage(archived) {
  const tbody = h("tbody", { role: "rowgroup" });
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "Show more campaigns");
  const table = h(
    "table",
    { role: "table", "aria-label": "Campaigns", class: "cards" },
    h(
      "thead",
      { role: "rowgroup" },
      h(
        "tr",
        { role: "row" },
        ["Name", "Status", "Delivered", "In progress", "Failed", "Total", "Launched"].map((c) =>
          h("th", { role: "columnheader", scope: "col" }, c),
        ),
      ),
    ),
    tbody,
  );
  const views = h(
    "nav",
    { "aria-label": "Campaign views", class: "views" },
    h("a", { href: "#/", "aria-current": archived ? false : "page" }, "Active"),
    h("a", { href: "#/archived", "aria-current": archived ? "page" : false }, "Archived"),
  );
  let cursor = null;
  async function load() {
    const status = archived ? "&status=archived" : "";
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api(`/v1/campaigns?limit=${campaignsPerPage}${status}${after}`);
    tbody.append(...page.items.map(campaignRow));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!tbody.children.length) {
      const none = archived ? "No archived campaigns." : "No campaigns yet.";
      tbody.append(h("tr", { role: "row" }, h("td", { role: "cell", colspan: 7 }, none)));
    }
  }
  more.addEventListener("click", () => load().catch(showError));
  const heading = archived ? "Archived campaigns" : "Active campaigns";
  setPage(heading, h("h1", {}, heading), views, h("div", { class: "table-wrap" }, table), more);
  await load();
}

function campaignRow(c) {
  const inProgress = c.counts.queued + c.counts.pending + c.counts.scheduled;
  const cell = (label, ...content) => h("td", { role: "cell", "data-label": label }, ...content);
  return h(
    "tr",
    { role: "row" },
    cell("Name", h("a", { href: `#/campaigns/${c.id}` }, c.name)),
    cell("Status", h("span", { class: "badge" }, c.status)),
    cell("Delivered", formatNumber(c.counts.delivered)),
    cell("In progress", formatNumber(inProgress)),
    cell("Failed", formatNumber(c.counts.failed)),
    cell("Total", formatNumber(c.counts.total)),
    cell("Launched", time(c.launched_at)),
  );
}

async function allContactLists() {
  const lists = [];
  let cursor = null;
  do {
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api(`/v1/contact-lists?limit=500${after}`);
    lists.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return lists;
}

async function newCampaignPage() {
  const lists = await allContactLists();
  const field = (id, label, control, hint) =>
    h("div", { class: "field" }, h("label", { for: id }, label), hint, control);
  const name = h("input", { id: "campaign-name", required: true, maxlength: 200 });
  const body = h("textarea", { id: "campaign-body", required: true, maxlength: 1600, rows: 4 });
  const list = h(
    "select",
    { id: "campaign-list", required: true },
    h("option", { value: "" }, "Choose a contact list"),
    lists.map((l) => h("option", { value: l.id }, l.name)),
  );
  const preview = h("output", { class: "preview", for: "campaign-body", "aria-live": "polite" });
  const hint = h(
    "p",
    { class: "hint", id: "body-hint" },
    "Merge fields such as {first_name}, {last_name} or a column of the list; shown below for the list's first contact.",
  );
  body.setAttribute("aria-describedby", "body-hint");
  const form = h(
    "form",
    { class: "card" },
    field("campaign-name", "Name", name),
    field("campaign-body", "Message", body, hint),
    h("div", { class: "field" }, h("p", { class: "label" }, "Preview"), preview),
    field(
      "campaign-list",
      "Contact list",
      list,
      lists.length ? null : h("p", { class: "hint" }, "No contact lists yet: import one through the API (POST /v1/contact-lists)."),
    ),
    h("button", { type: "submit", class: "primary" }, "Create campaign"),
  );
  let sample = {};
  let pending = null;
  async function updatePreview() {
    if (!body.value) return preview.replaceChildren("Type a message to see it as sent.");
    try {
      const shown = await api("/v1/campaigns/preview", {
        method: "POST",
        body: { body: body.value, contact: sample },
      });
      const segments = `${shown.segments} segment${shown.segments === 1 ? "" : "s"}`;
      preview.replaceChildren(
        h("span", { class: "text" }, shown.text),
        h("span", { class: "meta" }, `${shown.encoding} · ${shown.characters} characters · ${segments}`),
      );
    } catch (error) {
      preview.replaceChildren(h("span", { class: "meta" }, error.message));
    }
  }
  const schedulePreview = () => {
    clearTimeout(pending);
    pending = setTimeout(updatePreview, 150);
  };
  body.addEventListener("input", schedulePreview);
  list.addEventListener("change", async () => {
    sample = {};
    if (list.value) {
      const page = await api(`/v1/contact-lists/${list.value}/contacts?limit=1`).catch(() => null);
      const first = page?.items?.[0];
      if (first) sample = { first_name: first.first_name, last_name: first.last_name, phone: first.phone, fields: first.fields };
    }
    schedulePreview();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api("/v1/campaigns", {
        method: "POST",
        body: { name: name.value, body: body.value, contact_list_id: list.value },
      });
      location.hash = `#/campaigns/${made.id}`;
    } catch (error) {
      showError(error);
    }
  });
  setPage("New campaign", h("h1", {}, "New campaign"), form);
  updatePreview();
  name.focus();
}

document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("campanile:unauthorized", () =>
  signOut("The API key was refused (revoked, or mistyped): sign in again."),
);
window.addEventListener("hashchange", () => session.key() && route());
if (session.key()) {
  // Signed in earlier in this tab: the page first, then the school's name (a refused key
  // signs out: campanile:unauthorized).
  route().then(() => start().catch(showError));
} else signInPage();

// A campaign's live stream (README, A campaign's live stream): Server-Sent Events read with
// fetch, so that every connection, the first and each one after a drop, can say where it
// left off in `Last-Event-ID` (an EventSource sends it only on its own reconnections, and a
// new one is needed when its token expires). The API key never goes in the URL: each
// connection asks for a fresh short-lived stream token and puts that in `?token=`.

import { api, problem } from "./api.js";

const QUIET_LIMIT_MS = 40_000; // the stream sends a comment every 15 s: longer is a dead line
const MAX_DELAY_MS = 15_000;

/** Open the stream; `onEvent(event)` gets each event's JSON, `onState("live" |
 * "reconnecting")` the connection's state. `first` is a stream token the page asked for
 * before it read the contacts: the first connection starts where the stream was then (its
 * `last_event_id`), not at the campaign's beginning. Returns { close }. */
export function openStream(campaignId, onEvent, onState, first = null) {
  // Where this tab left the campaign's stream last time: a page opened again resumes there
  // (whatever changed since is replayed), or else where the stream was at `first`.
  const remembered = `campanile.lastEventId.${campaignId}`;
  const start = first?.last_event_id ?? null; // where the stream was as this page read it
  let lastEventId = sessionStorage.getItem(remembered) ?? start;
  let minted = first;
  let closed = false;
  let controller = null;

  async function connectOnce() {
    controller = new AbortController();
    const { signal } = controller;
    const path = `/v1/campaigns/${encodeURIComponent(campaignId)}/events`;
    const { token } = minted ?? (await api(`${path}/token`, { method: "POST", signal }));
    minted = null; // each later connection asks for a fresh one
    const headers = { Accept: "text/event-stream" };
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    const response = await fetch(`${path}?token=${encodeURIComponent(token)}`, {
      headers,
      signal,
      cache: "no-store",
    });
    if (!response.ok) throw await problem(response);
    onState("live");
    await read(response.body, controller, (id, data) => {
      if (id !== null) {
        lastEventId = id;
        sessionStorage.setItem(remembered, id);
      }
      if (data) onEvent(JSON.parse(data));
    });
  }

  (async () => {
    let delay = 500;
    while (!closed) {
      const started = Date.now();
      try {
        await connectOnce();
      } catch (error) {
        if (closed) return;
        if (error.status === 404 || error.status === 401) return onState("ended");
        if (error.status === 400 && lastEventId !== null) {
          // A position the stream no longer takes (remembered by an older Campanile, say):
          // forgotten, and the stream resumed where it was as this page read the contacts
          // (or, failing that, from the campaign's first event), never retried as it was.
          sessionStorage.removeItem(remembered);
          lastEventId = lastEventId === start ? null : start;
        }
      }
      if (closed) return;
      onState("reconnecting");
      if (Date.now() - started > 10_000) delay = 500; // it had been working: try again soon
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  })();

  return {
    close() {
      closed = true;
      controller?.abort();
    },
  };
}

/** Parse an event stream (the HTML standard's rules for `id:` and `data:` lines), calling
 * `dispatch(id, data)` at each blank line; abort when nothing comes for too long. */
async function read(body, controller, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let data = [];
  let quiet = setTimeout(() => controller.abort(), QUIET_LIMIT_MS);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(quiet);
      quiet = setTimeout(() => controller.abort(), QUIET_LIMIT_MS);
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length || id !== null) dispatch(id, data.join("\n"));
          id = null;
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const text = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = text;
        else if (field === "data") data.push(text);
      }
    }
  } finally {
    clearTimeout(quiet);
  }
}

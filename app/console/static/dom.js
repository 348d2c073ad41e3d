// Building the page from data, never from HTML strings: text is always text.

/** An element: h("td", { class: "x", onclick: f }, "text", child, ...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

const number = new Intl.NumberFormat();
const moment = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export const formatNumber = (n) => number.format(n);

/** A <time> for an RFC 3339 timestamp (or a dash). */
export function time(value) {
  if (!value) return "—";
  return h("time", { datetime: value }, moment.format(new Date(value)));
}

/** Sortable form of an RFC 3339 UTC timestamp, to the microsecond. */
export function stamp(value) {
  const [whole, fraction = ""] = value.replace(/(Z|[+-]00:00)$/, "").split(".");
  return whole + "." + fraction.padEnd(6, "0");
}

/** One dialog for the whole console: `buttons` are [label, value, className]; resolves to
 * the value of the button pressed ("" when dismissed with Escape). */
export function openDialog(title, body, buttons) {
  const dialog = document.getElementById("dialog");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-body").replaceChildren(...[body].flat());
  document.getElementById("dialog-buttons").replaceChildren(
    ...buttons.map(([label, value, className]) =>
      h("button", { value, class: className || false }, label),
    ),
  );
  dialog.returnValue = "";
  const opener = document.activeElement;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener && opener.isConnected) opener.focus();
        resolve(dialog.returnValue);
      },
      { once: true },
    );
  });
}

export async function confirmDialog(title, text, action) {
  const chosen = await openDialog(title, h("p", {}, text), [
    ["Cancel", "cancel", "quiet"],
    [action, "confirm", "primary"],
  ]);
  return chosen === "confirm";
}

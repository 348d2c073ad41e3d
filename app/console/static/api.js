// The public REST API (/v1), with the school's key from this browser session only.

const KEY = "campanile.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.clear(), // the key and where the streams were
};

/** An answer that is not a success: its problem's `detail` (README, The OpenAPI document). */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function problem(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.detail || body.title || response.statusText);
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }
}

/** fetch with the key; JSON in and out (`raw`: the Response itself). A 401 signs out. */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${session.key()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const error = await problem(response);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("campanile:unauthorized"));
    throw error;
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** Query string of the values that are set. */
export function query(params) {
  const set = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return set.length ? "?" + new URLSearchParams(set).toString() : "";
}

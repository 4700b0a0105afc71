// The gateway's REST API for the page: JSON in and out, the signed-in
// user's bearer token, and RFC 9457 problems turned into one sentence a
// person can act on.

const TOKEN_KEY = "lizards.token";

export const auth = {
  get token() { return localStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
  },
  // Called when the server refuses the token (expired, revoked, account
  // deleted); the app signs out.
  expired() {},
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// `open`: a public read, sent without the token so the gateway may answer
// it from its shared cache.
export async function api(path, { method = "GET", body, open = false } = {}) {
  const headers = { Accept: "application/json" };
  if (auth.token && !open) headers.Authorization = "Bearer " + auth.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "Lizards cannot be reached; check your connection and try again.");
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (response.status === 401 && headers.Authorization) auth.expired();
  if (!response.ok) throw new ApiError(response.status, problemMessage(response, json));
  return json;
}

// "Insufficient cash — amount: must be positive", or the status line when
// the body is not a problem document.
function problemMessage(response, problem) {
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return `Too many requests; try again in ${wait || "a few"} seconds.`;
  }
  if (!problem || typeof problem !== "object") return `HTTP ${response.status} ${response.statusText}`;
  const parts = [problem.detail || problem.title].filter(Boolean);
  for (const e of problem.errors || []) {
    // The detail often names the field already ("'quantity': must be ...").
    const said = parts.some((p) => p.includes(e.message) && (!e.field || p.includes(e.field)));
    if (!said) parts.push(e.field ? `${e.field}: ${e.message}` : e.message);
  }
  return parts.join(" — ") || `HTTP ${response.status}`;
}

export function money(text) {
  const n = Number(text);
  return Number.isFinite(n) ? n.toLocaleString("en-US", { style: "currency", currency: "USD" }) : "—";
}

export function formatPrice(p) {
  return p >= 1 ? p.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
                : p.toPrecision(4);
}

export function signed(n, digits = 2) {
  return (n > 0 ? "+" : "") + n.toFixed(digits);
}

export function trend(n) { return n > 0 ? "up" : n < 0 ? "down" : ""; }

// Shows `text` in an error or status line, or hides the line when empty.
export function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// Runs a form's action with its buttons disabled, so a double click
// cannot submit twice, and reports a failure in `errorLine`.
export async function submitting(form, errorLine, action) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  say(errorLine, "");
  try {
    await action();
  } catch (error) {
    say(errorLine, error.message);
    return error;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
  return null;
}

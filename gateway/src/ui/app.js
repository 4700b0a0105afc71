// Lizards watchlist: one WebSocket, a session that survives reconnects, and
// a table of live prices.
"use strict";

const STORAGE_KEY = "lizards.watchlist";
const rows = new Map(); // symbol -> {tr, first, last}
const statusEl = document.getElementById("status");
const errorEl = document.getElementById("error");
const tbody = document.querySelector("#watchlist tbody");
let socket = null;
let sessionUrl = null;
let retry = 500;

function saved() {
  try { return JSON.parse(localStorage.getItem(STORAGE_KEY)) || ["AAPL", "MSFT", "BTC-USD"]; } catch { return []; }
}
function save() { localStorage.setItem(STORAGE_KEY, JSON.stringify([...rows.keys()])); }

function setStatus(text, cls) { statusEl.textContent = text; statusEl.className = "status " + (cls || ""); }
function showError(message) { errorEl.textContent = message; errorEl.hidden = false; }

function addRow(symbol) {
  if (rows.has(symbol)) return;
  const tr = document.createElement("tr");
  tr.dataset.symbol = symbol;
  tr.innerHTML = `<td class="sym"></td><td class="price">—</td><td class="change">—</td><td class="time">—</td>
    <td><button class="remove" aria-label="Remove ${symbol}">✕</button></td>`;
  tr.querySelector(".sym").textContent = symbol;
  tr.querySelector(".remove").addEventListener("click", () => removeSymbol(symbol));
  tbody.appendChild(tr);
  rows.set(symbol, { tr, first: null, last: null });
  save();
}

function removeSymbol(symbol) {
  const row = rows.get(symbol);
  if (!row) return;
  row.tr.remove();
  rows.delete(symbol);
  save();
  send({ type: "unsubscribe", symbols: [symbol] });
}

function formatPrice(p) {
  return p >= 1 ? p.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })
                : p.toPrecision(4);
}

function update(symbol, quote) {
  const row = rows.get(symbol);
  if (!row) return;
  const price = row.tr.querySelector(".price");
  if (row.first === null) row.first = quote.price;
  if (row.last !== null && quote.price !== row.last) {
    const cls = quote.price > row.last ? "flash-up" : "flash-down";
    price.classList.remove("flash-up", "flash-down");
    void price.offsetWidth; // restart the animation
    price.classList.add(cls);
  }
  row.last = quote.price;
  price.textContent = formatPrice(quote.price);
  const change = ((quote.price - row.first) / row.first) * 100;
  const changeEl = row.tr.querySelector(".change");
  changeEl.textContent = (change >= 0 ? "+" : "") + change.toFixed(2) + " %";
  changeEl.className = "change " + (change > 0 ? "up" : change < 0 ? "down" : "");
  row.tr.querySelector(".time").textContent = new Date(quote.timestamp).toLocaleTimeString();
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

async function session() {
  if (sessionUrl) return sessionUrl;
  const response = await fetch("/session", { method: "POST" });
  if (!response.ok) throw new Error("session: HTTP " + response.status);
  sessionUrl = (await response.json()).websocket_url;
  return sessionUrl;
}

async function connect() {
  setStatus("connecting…");
  let url;
  try { url = await session(); } catch (e) { return reconnect(); }
  socket = new WebSocket(url);
  socket.onopen = () => {
    retry = 500;
    setStatus("live", "live");
    if (rows.size) send({ type: "subscribe", symbols: [...rows.keys()] });
  };
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "price_update") {
      for (const [symbol, quote] of Object.entries(frame.data)) update(symbol, quote);
    } else if (frame.type === "error") {
      const bad = /^Invalid stock symbol: (.*)$/.exec(frame.message);
      if (bad && rows.has(bad[1])) { rows.get(bad[1]).tr.remove(); rows.delete(bad[1]); save(); }
      if (!/^Unknown or expired session/.test(frame.message)) showError(frame.message);
      else sessionUrl = null;
    }
  };
  socket.onclose = () => { setStatus("reconnecting…", "down"); reconnect(); };
}

function reconnect() {
  setTimeout(connect, retry);
  retry = Math.min(retry * 2, 10000);
}

document.getElementById("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("symbol-input");
  const symbol = input.value.trim().toUpperCase();
  input.value = "";
  errorEl.hidden = true;
  if (!symbol) return;
  addRow(symbol);
  send({ type: "subscribe", symbols: [symbol] });
});

saved().forEach(addRow);
connect();

// The watchlist table: symbols kept in localStorage, live prices that flash
// on change, change since the first price this page saw, last update time.

import { formatPrice, signed, trend } from "./api.js";

const STORAGE_KEY = "lizards.watchlist";
const DEFAULTS = ["AAPL", "MSFT", "BTC-USD"];

export function createWatchlist(tbody, { onSelect, onRemove }) {
  const rows = new Map(); // symbol -> {tr, first, last}
  let selected = null;

  function saved() {
    try { return JSON.parse(localStorage.getItem(STORAGE_KEY)) || DEFAULTS; } catch { return DEFAULTS; }
  }
  function save() { localStorage.setItem(STORAGE_KEY, JSON.stringify([...rows.keys()])); }

  function add(symbol) {
    if (rows.has(symbol)) return false;
    const tr = document.createElement("tr");
    tr.dataset.symbol = symbol;
    tr.innerHTML = `<th scope="row"><button class="sym link" type="button"></button></th>
      <td class="price">—</td><td class="change">—</td><td class="time">—</td>
      <td><button class="remove" type="button">✕</button></td>`;
    const open = tr.querySelector(".sym");
    open.textContent = symbol;
    open.setAttribute("aria-label", `Show ${symbol} chart`);
    open.addEventListener("click", () => select(symbol));
    const remove = tr.querySelector(".remove");
    remove.setAttribute("aria-label", `Remove ${symbol}`);
    remove.addEventListener("click", () => { drop(symbol); onRemove(symbol); });
    tbody.appendChild(tr);
    rows.set(symbol, { tr, first: null, last: null });
    save();
    if (!selected) select(symbol);
    return true;
  }

  function drop(symbol) {
    const row = rows.get(symbol);
    if (!row) return;
    row.tr.remove();
    rows.delete(symbol);
    save();
    if (selected === symbol) {
      selected = null;
      const next = rows.keys().next();
      select(next.done ? null : next.value);
    }
  }

  function select(symbol) {
    selected = symbol;
    for (const [s, row] of rows) row.tr.classList.toggle("selected", s === symbol);
    onSelect(symbol);
  }

  function update(symbol, quote) {
    const row = rows.get(symbol);
    if (!row) return;
    const price = row.tr.querySelector(".price");
    if (row.first === null) row.first = quote.price;
    if (row.last !== null && quote.price !== row.last) {
      price.classList.remove("flash-up", "flash-down");
      void price.offsetWidth; // restarts the animation
      price.classList.add(quote.price > row.last ? "flash-up" : "flash-down");
    }
    row.last = quote.price;
    price.textContent = formatPrice(quote.price);
    const change = ((quote.price - row.first) / row.first) * 100;
    const changeEl = row.tr.querySelector(".change");
    changeEl.textContent = signed(change) + " %";
    changeEl.className = "change " + trend(change);
    row.tr.querySelector(".time").textContent = new Date(quote.timestamp).toLocaleTimeString();
  }

  return {
    symbols: () => [...rows.keys()],
    has: (symbol) => rows.has(symbol),
    last: (symbol) => rows.get(symbol)?.last ?? null,
    load() { saved().forEach(add); },
    add,
    drop,
    update,
  };
}

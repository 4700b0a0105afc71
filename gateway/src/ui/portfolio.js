// The simulated portfolio: cash, positions valued at the latest prices,
// P&L, deposits and market orders. Money arrives as decimal strings and is
// only formatted here, never computed with.

import { api, money, say, signed, submitting, trend } from "./api.js";

const REFRESH_MS = 5000;

export function createPortfolio(els) {
  let timer = null;

  els.depositForm.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(els.depositForm, els.error, async () => {
      const amount = els.amount.value.trim();
      const result = await api("/portfolio/deposit", { method: "POST", body: { amount } });
      els.amount.value = "";
      say(els.message, `Deposited ${money(amount)}; cash is now ${money(result.cash)}.`);
      await refresh();
    });
  });

  els.orderForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const side = event.submitter?.value === "sell" ? "sell" : "buy";
    submitting(els.orderForm, els.error, async () => {
      const body = { symbol: els.symbol.value.trim().toUpperCase(), side, quantity: els.quantity.value.trim() };
      const order = await api("/portfolio/orders", { method: "POST", body });
      const verb = side === "buy" ? "Bought" : "Sold";
      say(els.message, `${verb} ${order.quantity} ${order.symbol} at ${money(order.price)} (${money(order.value)}).`);
      await refresh();
    });
  });

  async function refresh() {
    try {
      render(await api("/portfolio"));
    } catch (error) {
      say(els.error, error.message);
    }
  }

  function render(p) {
    els.cash.textContent = money(p.cash);
    els.positionsValue.textContent = money(p.positions_value);
    els.total.textContent = money(p.total_value);
    const pnl = Number(p.unrealised_pnl) + Number(p.realised_pnl);
    els.pnl.textContent = (pnl > 0 ? "+" : "") + money(pnl);
    els.pnl.className = trend(pnl);
    els.positions.replaceChildren(...p.positions.map(position));
    els.empty.hidden = p.positions.length > 0;
  }

  function position(pos) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = pos.symbol;
    const pnl = Number(pos.unrealised_pnl);
    const cells = [pos.symbol, Number(pos.quantity).toString(), money(pos.avg_cost), money(pos.price),
      money(pos.value), signed(pnl)];
    cells.forEach((text, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      cell.textContent = text;
      tr.appendChild(cell);
    });
    tr.lastChild.className = trend(pnl);
    return tr;
  }

  return {
    start() {
      els.panel.hidden = false;
      refresh();
      timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    },
    stop() {
      els.panel.hidden = true;
      clearInterval(timer);
      say(els.message, "");
      say(els.error, "");
    },
    prefill(symbol) { if (symbol && !els.symbol.value) els.symbol.value = symbol; },
  };
}

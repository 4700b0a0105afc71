// Lizards in the browser: wires the watchlist, the chart, the account, the
// portfolio and the alerts to one WebSocket stream and the REST API.

import { auth, say } from "./api.js";
import { createAccount } from "./account.js";
import { createAlerts } from "./alerts.js";
import { createChart } from "./chart.js";
import { createPortfolio } from "./portfolio.js";
import { createStream } from "./stream.js";
import { createWatchlist } from "./watchlist.js";

const $ = (id) => document.getElementById(id);
const statusEl = $("status");
const errorEl = $("error");

const chart = createChart($("chart"), {
  title: $("chart-title"),
  note: $("chart-note"),
  buttons: document.querySelectorAll("#ranges button"),
});

const watchlist = createWatchlist(document.querySelector("#watchlist tbody"), {
  onSelect(symbol) {
    chart.show(symbol);
    portfolio.prefill(symbol);
    alerts.prefill(symbol);
  },
  onRemove(symbol) { stream.send({ type: "unsubscribe", symbols: [symbol] }); },
});

const stream = createStream({
  onStatus(text, cls) { statusEl.textContent = text; statusEl.className = "status " + cls; },
  onOpen() {
    const symbols = watchlist.symbols();
    if (symbols.length) stream.send({ type: "subscribe", symbols });
  },
  onPrices(data) {
    for (const [symbol, quote] of Object.entries(data)) {
      watchlist.update(symbol, quote);
      chart.push(symbol, quote);
    }
  },
  onAlert(alert) { alerts.push(alert); },
  onError(message) {
    const unknown = /^Invalid stock symbol: (.*)$/.exec(message);
    if (unknown) watchlist.drop(unknown[1]);
    say(errorEl, message);
  },
});

const portfolio = createPortfolio({
  panel: $("portfolio-panel"),
  cash: $("cash"),
  positionsValue: $("positions-value"),
  total: $("total-value"),
  pnl: $("pnl"),
  depositForm: $("deposit-form"),
  amount: $("deposit-amount"),
  orderForm: $("order-form"),
  symbol: $("order-symbol"),
  quantity: $("order-quantity"),
  positions: document.querySelector("#positions tbody"),
  empty: $("no-positions"),
  message: $("portfolio-message"),
  error: $("portfolio-error"),
});

const alerts = createAlerts({
  panel: $("alerts-panel"),
  form: $("rule-form"),
  kind: $("rule-kind"),
  symbol: $("rule-symbol"),
  symbolField: $("rule-symbol-field"),
  threshold: $("rule-threshold"),
  rules: $("rules"),
  noRules: $("no-rules"),
  feed: $("feed"),
  noAlerts: $("no-alerts"),
  error: $("alerts-error"),
});

const account = createAccount({
  panel: $("auth-panel"),
  form: $("auth-form"),
  email: $("auth-email"),
  password: $("auth-password"),
  error: $("auth-error"),
  who: $("who"),
  whoEmail: $("who-email"),
  signOut: $("sign-out"),
}, {
  onChange(user) {
    if (user) { portfolio.start(); alerts.start(); } else { portfolio.stop(); alerts.stop(); }
    stream.restart(); // alert frames need a session bound to the user
  },
});

$("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("symbol-input");
  const symbol = input.value.trim().toUpperCase();
  input.value = "";
  say(errorEl, "");
  if (symbol && watchlist.add(symbol)) stream.send({ type: "subscribe", symbols: [symbol] });
});

auth.expired = () => account.signOut("Your sign-in has expired; please sign in again.");
watchlist.load();
// Who is signed in decides which session the stream asks for.
account.refresh().finally(() => stream.start());

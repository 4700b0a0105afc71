// Alert rules (create, delete) and the feed of fired alerts: the latest
// from GET /alerts, then each `alert` frame the WebSocket pushes.

import { api, formatPrice, say, submitting } from "./api.js";

const FEED_SIZE = 30;

export function describe(rule) {
  const what = rule.kind === "portfolio_change_pct" ? "Portfolio" : rule.symbol;
  switch (rule.kind) {
    case "above": return `${what} above ${formatPrice(rule.threshold)}`;
    case "below": return `${what} below ${formatPrice(rule.threshold)}`;
    default: {
      const within = rule.window ? ` within ${rule.window} min` : "";
      const sign = rule.threshold > 0 ? "+" : "";
      return `${what} moves ${sign}${rule.threshold} %${within}`;
    }
  }
}

export function createAlerts(els) {
  els.kind.addEventListener("change", kindChanged);

  function kindChanged() {
    const portfolio = els.kind.value === "portfolio_change_pct";
    els.symbolField.hidden = portfolio;
    els.symbol.required = !portfolio;
    els.threshold.placeholder = els.kind.value.endsWith("pct") ? "% e.g. 2 or -5" : "price";
  }
  kindChanged();

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(els.form, els.error, async () => {
      const body = { kind: els.kind.value, threshold: Number(els.threshold.value) };
      if (els.kind.value !== "portfolio_change_pct") body.symbol = els.symbol.value.trim().toUpperCase();
      await api("/alerts/rules", { method: "POST", body });
      els.threshold.value = "";
      await refresh();
    });
  });

  async function refresh() {
    try {
      const [rules, alerts] = await Promise.all([api("/alerts/rules"), api(`/alerts?limit=${FEED_SIZE}`)]);
      els.rules.replaceChildren(...rules.rules.map(ruleItem));
      els.noRules.hidden = rules.rules.length > 0;
      els.feed.replaceChildren(...alerts.alerts.map(alertItem));
      els.noAlerts.hidden = alerts.alerts.length > 0;
    } catch (error) {
      say(els.error, error.message);
    }
  }

  function ruleItem(rule) {
    const li = document.createElement("li");
    li.dataset.rule = rule.id;
    const text = document.createElement("span");
    text.textContent = describe(rule);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Delete rule: ${describe(rule)}`);
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        await api(`/alerts/rules/${rule.id}`, { method: "DELETE" });
        await refresh();
      } catch (error) {
        remove.disabled = false;
        say(els.error, error.message);
      }
    });
    li.append(text, remove);
    return li;
  }

  function alertItem(alert) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = alert.fired_at;
    time.textContent = new Date(alert.fired_at).toLocaleTimeString();
    const text = document.createElement("span");
    text.textContent = alert.message;
    li.append(time, text);
    return li;
  }

  return {
    start() { els.panel.hidden = false; refresh(); },
    stop() { els.panel.hidden = true; els.rules.replaceChildren(); els.feed.replaceChildren(); say(els.error, ""); },
    push(alert) {
      const li = alertItem(alert);
      li.className = "fresh";
      els.feed.prepend(li);
      els.noAlerts.hidden = true;
      while (els.feed.children.length > FEED_SIZE) els.feed.lastChild.remove();
    },
    prefill(symbol) { if (symbol && !els.symbol.value) els.symbol.value = symbol; },
  };
}

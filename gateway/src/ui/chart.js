// The chart of the selected symbol, drawn on a canvas. "Live" is a line of
// the last 15 minutes (history from /quotes/{symbol}/history, then every
// streamed price); the other ranges are OHLC candles from
// /quotes/{symbol}/candles whose newest candle moves with the stream.

import { api, formatPrice } from "./api.js";

const RANGES = {
  live: { label: "last 15 minutes", minutes: 15 },
  "1h": { label: "last hour, 1-minute candles", minutes: 60, interval: "1m", step: 60e3 },
  "1d": { label: "last day, 15-minute candles", minutes: 1440, interval: "15m", step: 900e3 },
  "1w": { label: "last week, hourly candles", minutes: 10080, interval: "1h", step: 3600e3 },
};
const HEIGHT = 260;
const AXIS = 72; // px kept right of the plot for price labels

export function createChart(canvas, { title, note, buttons }) {
  let symbol = null;
  let range = "live";
  let points = []; // live: {t, p}, oldest first
  let candles = []; // ranges: {t, o, h, l, c}, oldest first
  let loads = 0;
  let frame = 0;

  for (const button of buttons) {
    button.addEventListener("click", () => {
      range = button.dataset.range;
      for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
      load();
    });
  }
  window.addEventListener("resize", redraw);

  async function load() {
    const load = ++loads;
    points = [];
    candles = [];
    note.textContent = "";
    title.textContent = symbol || "Chart";
    canvas.setAttribute("aria-label", symbol ? `${symbol} price chart, ${RANGES[range].label}` : "No symbol selected");
    redraw();
    if (!symbol) return;
    const spec = RANGES[range];
    const from = encodeURIComponent(new Date(Date.now() - spec.minutes * 60e3).toISOString());
    const path = `/quotes/${encodeURIComponent(symbol)}`;
    try {
      if (spec.interval) {
        const body = await api(`${path}/candles?interval=${spec.interval}&from=${from}&limit=1000`, { open: true });
        if (load !== loads) return;
        const loaded = body.candles.map((c) => ({ t: Date.parse(c.start), o: c.open, h: c.high, l: c.low, c: c.close }));
        const newest = loaded.length ? loaded[loaded.length - 1].t : -Infinity;
        candles = loaded.concat(candles.filter((c) => c.t > newest));
      } else {
        const body = await api(`${path}/history?from=${from}&limit=1000`, { open: true });
        if (load !== loads) return;
        const loaded = body.quotes.map((q) => ({ t: Date.parse(q.timestamp), p: q.price })).reverse();
        const newest = loaded.length ? loaded[loaded.length - 1].t : -Infinity;
        points = loaded.concat(points.filter((p) => p.t > newest));
      }
    } catch (error) {
      if (load === loads) note.textContent = error.message;
    }
    redraw();
  }

  function push(s, quote) {
    if (s !== symbol) return;
    const t = Date.parse(quote.timestamp);
    const p = quote.price;
    const spec = RANGES[range];
    const oldest = Date.now() - spec.minutes * 60e3;
    if (!spec.interval) {
      points.push({ t, p });
      while (points.length && points[0].t < oldest) points.shift();
    } else {
      const start = Math.floor(t / spec.step) * spec.step;
      const last = candles[candles.length - 1];
      if (last && last.t === start) {
        last.h = Math.max(last.h, p);
        last.l = Math.min(last.l, p);
        last.c = p;
      } else if (!last || start > last.t) {
        candles.push({ t: start, o: p, h: p, l: p, c: p });
        while (candles.length && candles[0].t < oldest) candles.shift();
      }
    }
    redraw();
  }

  // One draw per animation frame however many prices arrive.
  function redraw() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(HEIGHT * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    ctx.clearRect(0, 0, width, HEIGHT);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");

    const series = RANGES[range].interval ? candles : points;
    if (series.length === 0) {
      ctx.textAlign = "center";
      ctx.fillText(symbol ? "Waiting for prices…" : "Pick a symbol in the watchlist", width / 2, HEIGHT / 2);
      return;
    }
    const lows = series.map((d) => d.l ?? d.p);
    const highs = series.map((d) => d.h ?? d.p);
    let low = Math.min(...lows);
    let high = Math.max(...highs);
    const pad = (high - low) * 0.08 || high * 0.001 || 1;
    low -= pad;
    high += pad;
    const plot = { left: 4, top: 10, width: Math.max(width - AXIS - 4, 10), height: HEIGHT - 34 };
    const y = (price) => plot.top + ((high - price) / (high - low)) * plot.height;
    const t0 = series[0].t;
    const t1 = Math.max(series[series.length - 1].t, t0 + 1);
    const x = (t) => plot.left + ((t - t0) / (t1 - t0)) * plot.width;

    // Grid and price axis.
    ctx.strokeStyle = color("--grid");
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    for (let i = 0; i <= 4; i++) {
      const price = high - ((high - low) * i) / 4;
      const gy = Math.round(y(price)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(plot.left, gy);
      ctx.lineTo(plot.left + plot.width, gy);
      ctx.stroke();
      ctx.fillText(formatPrice(price), plot.left + plot.width + 6, gy + 4);
    }
    const time = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    ctx.fillText(time(t0), plot.left, HEIGHT - 6);
    ctx.textAlign = "right";
    ctx.fillText(time(t1), plot.left + plot.width, HEIGHT - 6);

    if (RANGES[range].interval) {
      const body = Math.max(1, Math.min(14, (plot.width / series.length) * 0.7));
      for (const c of series) {
        const cx = series.length === 1 ? plot.left + plot.width / 2 : x(c.t);
        ctx.strokeStyle = ctx.fillStyle = color(c.c >= c.o ? "--up" : "--down");
        ctx.beginPath();
        ctx.moveTo(cx, y(c.h));
        ctx.lineTo(cx, y(c.l));
        ctx.stroke();
        const top = y(Math.max(c.o, c.c));
        ctx.fillRect(cx - body / 2, top, body, Math.max(1, y(Math.min(c.o, c.c)) - top));
      }
    } else {
      ctx.strokeStyle = color("--accent");
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach((d, i) => (i ? ctx.lineTo(x(d.t), y(d.p)) : ctx.moveTo(x(d.t), y(d.p))));
      ctx.stroke();
      const last = series[series.length - 1];
      ctx.fillStyle = color("--accent");
      ctx.beginPath();
      ctx.arc(x(last.t), y(last.p), 3, 0, Math.PI * 2);
      ctx.fill();
    }
  }

  return {
    show(next) { symbol = next; load(); },
    push,
    symbol: () => symbol,
  };
}

// One WebSocket to the provider through the gateway. A session
// (POST /session) lets a reconnect resume the same subscriptions on any
// provider instance; a signed-in user's session also carries their alert
// frames. Failures back off from 0.5 s to 10 s.

import { auth } from "./api.js";

export function createStream(handlers) {
  let socket = null;
  let sessionUrl = null;
  let retry = 500;

  async function session() {
    if (sessionUrl) return sessionUrl;
    const headers = auth.token ? { Authorization: "Bearer " + auth.token } : {};
    const response = await fetch("/session", { method: "POST", headers });
    if (response.status === 401 && auth.token) {
      auth.expired();
      return session();
    }
    if (!response.ok) throw new Error("session: HTTP " + response.status);
    sessionUrl = (await response.json()).websocket_url;
    return sessionUrl;
  }

  async function connect() {
    handlers.onStatus("connecting…", "");
    let url;
    try { url = await session(); } catch { return reconnect(); }
    socket = new WebSocket(url);
    socket.onopen = () => {
      retry = 500;
      handlers.onStatus("live", "live");
      handlers.onOpen();
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "price_update") handlers.onPrices(frame.data);
      else if (frame.type === "alert") handlers.onAlert(frame.alert);
      else if (frame.type === "error") {
        // The server forgot the session (expired, or restarted embedded):
        // the next connection asks for a new one.
        if (/^Unknown or expired session/.test(frame.message)) sessionUrl = null;
        else handlers.onError(frame.message);
      }
    };
    socket.onclose = () => {
      socket = null;
      handlers.onStatus("reconnecting…", "down");
      reconnect();
    };
  }

  function reconnect() {
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  }

  return {
    start: connect,
    send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    },
    // The user signed in or out: a new session for the new identity.
    restart() {
      sessionUrl = null;
      retry = 100;
      if (socket) socket.close();
    },
  };
}

// Sign-in and registration. The token is kept in localStorage; the e-mail
// shown comes from GET /users/me, which also proves the token still works.

import { api, auth, say, submitting } from "./api.js";

export function createAccount(els, { onChange }) {
  let user = null;

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const register = event.submitter?.value === "register";
    const body = { email: els.email.value.trim(), password: els.password.value };
    submitting(els.form, els.error, async () => {
      if (register) await api("/auth/register", { method: "POST", body });
      const token = await api("/auth/login", { method: "POST", body });
      auth.token = token.access_token;
      els.password.value = "";
      await refresh();
    });
  });
  els.signOut.addEventListener("click", () => signOut());

  async function refresh() {
    if (!auth.token) return set(null);
    try {
      set(await api("/users/me"));
    } catch (error) {
      // A refused token has signed out already (auth.expired).
      if (error.status !== 401) say(els.error, error.message);
    }
  }

  function signOut(message) {
    auth.token = null;
    set(null);
    say(els.error, message);
  }

  function set(next) {
    const changed = (next && next.id) !== (user && user.id);
    user = next;
    els.panel.hidden = Boolean(user);
    els.who.hidden = !user;
    els.whoEmail.textContent = user ? user.email : "";
    if (changed) onChange(user);
  }

  return { refresh, signOut };
}

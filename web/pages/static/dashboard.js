// Keeps the queue dashboard live: redraws its tables from each /dashboard/stream snapshot and sends the operator's actions.
(() => {
  "use strict";
  const base = document.body.dataset.base; // the page's own path, so a path prefix in front of the app is kept
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  const utc = (t) => (t == null ? "" : new Date(t * 1000).toISOString().slice(0, 19).replace("T", " "));
  const pad = (n) => String(n).padStart(2, "0");
  function duration(s) {
    if (s == null) return "";
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }
  const enc = encodeURIComponent;

  function button(action, label, url, method, confirmText) {
    return el("button", { type: "button", "data-action": action, "data-method": method, "data-url": url,
      "data-confirm": confirmText }, label);
  }

  function fill(id, rows, emptyText, columns) {
    const empty = el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText));
    $(id).tBodies[0].replaceChildren(...(rows.length ? rows : [empty]));
  }

  function render(state) {
    $("updated").textContent = `as of ${utc(state.generated_at)} UTC`;
    $("redis-error").hidden = !state.redis_error;
    $("redis-error").textContent = state.redis_error || "";
    fill("queues", state.queues.map((q) => el("tr", { "data-queue": q.name }, el("th", {}, q.name),
      ...["waiting", "in_progress", "delayed", "dead"].map((k) => el("td", { "data-count": k }, q[k])))),
    "no queue", 5);
    fill("processes", (state.processes || []).map((p) => el("tr", { "data-process": p.name,
      "data-state": p.crash_looping ? "crash-loop" : p.state },
      el("td", {}, p.name),
      el("td", { class: "status" }, p.state + (p.crash_looping && p.state !== "crash-loop" ? " (crash loop)" : "")),
      el("td", {}, p.pid ?? ""), el("td", {}, p.restarts),
      el("td", {}, p.last_exit ? `${p.last_exit} at ${utc(p.last_exit_at)}` : ""),
      el("td", { class: "error" }, p.last_output || ""))),
    "not started by parley supervise (scripts/start): no restart data", 6);
    fill("workers", state.workers.map((w) => el("tr", { "data-worker": w.id }, el("td", {}, w.id),
      el("td", {}, (w.queues || []).join(", ")), el("td", {}, w.device ?? ""), el("td", {}, (w.busy || []).join(", ")),
      el("td", {}, utc(w.started_at)), el("td", {}, utc(w.seen_at)))), "no worker is alive", 6);
    fill("dead-letters", state.dead_letters.map((d) => {
      const url = `${base}/dead-letters/${enc(d.queue)}/${enc(d.message_id)}`;
      return el("tr", { "data-queue": d.queue, "data-message-id": d.message_id }, el("td", {}, d.queue),
        el("td", {}, el("code", {}, d.message_id)), el("td", {}, d.actor), el("td", {}, el("code", {}, JSON.stringify(d.args))),
        el("td", {}, utc(d.dead_at)), el("td", {}, d.retries), el("td", { class: "error" }, d.error),
        el("td", { class: "actions" }, button("retry", "Retry", `${url}/retry`, "POST"), " ",
          button("delete", "Delete", url, "DELETE", "Delete this dead letter for good?")));
    }), "no dead letters", 8);
    fill("jobs", state.jobs.map((j) => {
      const progress = j.progress || 0;
      return el("tr", { "data-job-id": j.id, "data-status": j.status },
        el("td", {}, el("code", { title: j.id }, j.id.slice(0, 8))), el("td", {}, j.kind), el("td", {}, j.queue),
        el("td", { class: "status" }, j.status),
        el("td", {}, el("progress", { max: 100, value: progress }), ` ${Math.round(progress * 10) / 10}%`),
        el("td", {}, duration(j.duration_s)), el("td", {}, utc(j.created_at)),
        el("td", { class: j.error ? "error" : null }, j.error || j.message || ""),
        el("td", { class: "actions" }, j.cancelable
          ? button("cancel", "Cancel", `${base}/jobs/${enc(j.id)}/cancel`, "POST", "Cancel this job?") : ""));
    }), "no jobs", 9);
  }

  function notify(text, isError) {
    const notice = $("notice");
    notice.textContent = text;
    notice.className = isError ? "error" : "";
    notice.hidden = false;
  }

  document.addEventListener("click", async (event) => {
    const target = event.target.closest("button[data-action]");
    if (!target || (target.dataset.confirm && !window.confirm(target.dataset.confirm))) return;
    target.disabled = true;
    try {
      const response = await fetch(target.dataset.url, { method: target.dataset.method, credentials: "same-origin" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) notify(body.message || `${target.dataset.action} failed (${response.status})`, true);
      else notify(`${target.dataset.action}: done`, false);
    } catch (error) {
      notify(`${target.dataset.action} failed: ${error}`, true);
    } finally {
      target.disabled = false; // the next snapshot redraws the row anyway
    }
  });

  const live = $("live");
  const setLive = (state, text) => { live.dataset.state = state; live.textContent = text; };
  const source = new EventSource(`${base}/stream`);
  setLive("connecting", "connecting…");
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("error", () => setLive("reconnecting", "reconnecting…")); // EventSource retries by itself
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
})();

// Run page: live stage progress, synced frame-stepping players, plotly charts, review shortcuts.
(function () {
  const fps = window.HOIWEB_FPS || 30;

  // ---- live progress --------------------------------------------------------------------------
  const panel = document.getElementById("progress-panel");
  function fmtSeconds(s) {
    if (s == null) return "";
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60), r = Math.round(s % 60);
    return m + "m " + String(r).padStart(2, "0") + "s";
  }
  function renderStages(stages) {
    const box = document.getElementById("stages");
    box.innerHTML = stages.map((s) => {
      const status = s.status || "pending";
      const right = s.seconds ? fmtSeconds(s.seconds) : status === "running" ? s.percent + "%" : "";
      let msg = "";
      if (status === "running" && s.message) msg = s.message + (s.eta_seconds ? " · ETA " + fmtSeconds(s.eta_seconds) : "");
      if (status === "failed" && s.message) msg = s.message;
      const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
      return `<div>${s.number}. ${esc(s.label)}</div>
        <div class="progress ${status}" data-stage="${s.number}"><span style="width: ${s.percent}%"></span></div>
        <div><span class="pill ${status}">${status}</span></div>
        <div class="small muted right">${right}</div><div class="msg">${esc(msg)}</div>`;
    }).join("");
  }
  if (panel && panel.dataset.active === "1") {
    const url = panel.dataset.statusUrl;
    const tick = async () => {
      try {
        const r = await fetch(url, { headers: { Accept: "application/json" } });
        if (r.ok) {
          const s = await r.json();
          renderStages(s.stages);
          const logBox = document.getElementById("live-log");
          if (logBox && s.log_tail) logBox.textContent = s.log_tail;
          const worker = document.getElementById("live-worker");
          if (worker) worker.textContent = s.worker ? "· " + s.worker : "";
          const pill = document.getElementById("run-status");
          pill.textContent = s.status; pill.className = "pill " + s.status;
          if (!s.active) { setTimeout(() => window.location.reload(), 600); return; }
        }
      } catch (e) { /* transient: keep polling */ }
      setTimeout(tick, 1500);
    };
    setTimeout(tick, 1000);
  }

  // ---- players: frame stepping, optional sync ---------------------------------------------------
  const videos = Array.from(document.querySelectorAll("video.stepper"));
  const label = document.getElementById("frame-label");
  const sync = document.getElementById("sync-videos");
  const primary = () => videos[0];
  function show() { if (label && primary()) label.textContent = "frame " + Math.round(primary().currentTime * fps) + " · " + primary().currentTime.toFixed(2) + " s"; }
  function step(delta) {
    if (!videos.length) return;
    const targets = sync && sync.checked ? videos : [primary()];
    const t = Math.max(0, (Math.round(primary().currentTime * fps) + delta) / fps + 0.5 / fps);
    targets.forEach((v) => { v.pause(); v.currentTime = Math.min(t, (v.duration || t)); });
    setTimeout(show, 60);
  }
  function togglePlay() {
    if (!videos.length) return;
    const play = primary().paused;
    const targets = sync && sync.checked ? videos : [primary()];
    targets.forEach((v) => { if (play) { v.currentTime = primary().currentTime; v.play().catch(() => {}); } else v.pause(); });
  }
  videos.forEach((v) => v.addEventListener("timeupdate", show));
  const on = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };
  on("step-back", () => step(-1));
  on("step-fwd", () => step(1));
  on("play-all", togglePlay);

  // ---- charts -----------------------------------------------------------------------------------
  const data = document.getElementById("chart-data");
  if (data && window.Plotly) {
    JSON.parse(data.textContent).forEach((c) => {
      window.Plotly.newPlot(c.id, c.data, c.layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] });
    });
  }

  // ---- keyboard: a accept, r reject, j/k next/previous, , . step, space play --------------------
  document.addEventListener("keydown", (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || e.metaKey || e.ctrlKey || e.altKey) return;
    const click = (id) => { const el = document.getElementById(id); if (el) { e.preventDefault(); el.click(); } };
    switch (e.key) {
      case "a": click("accept-btn"); break;
      case "r": click("reject-btn"); break;
      case "j": click("next-link"); break;
      case "k": click("prev-link"); break;
      case ",": e.preventDefault(); step(-1); break;
      case ".": e.preventDefault(); step(1); break;
      case " ": if (videos.length) { e.preventDefault(); togglePlay(); } break;
    }
  });
})();

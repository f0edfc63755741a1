// Runs list: row selection for bulk review, live status of active rows.
(function () {
  const form = document.getElementById("bulk-form");
  const ids = document.getElementById("bulk-ids");
  const count = document.getElementById("bulk-count");
  const boxes = () => Array.from(document.querySelectorAll(".row-select"));
  function sync() {
    const picked = boxes().filter((b) => b.checked).map((b) => b.value);
    if (ids) ids.value = picked.join(",");
    if (count) count.textContent = picked.length + " selected";
  }
  document.addEventListener("change", (e) => {
    if (e.target.id === "select-page") boxes().forEach((b) => (b.checked = e.target.checked));
    sync();
  });
  if (form) form.addEventListener("submit", (e) => {
    sync();
    const all = document.getElementById("select-all-matching");
    if (!ids.value && !(all && all.checked)) { e.preventDefault(); alert("Select runs first (or tick 'apply to all')."); }
  });
  // Poll active rows.
  const active = Array.from(document.querySelectorAll("tr[data-active]"));
  if (!active.length) return;
  async function poll() {
    let still = 0;
    for (const row of active) {
      if (!row.dataset.active) continue;
      try {
        const r = await fetch(`/runs/${row.dataset.run}/status.json`, { headers: { Accept: "application/json" } });
        if (!r.ok) continue;
        const s = await r.json();
        const pill = row.querySelector('[data-field="status"]');
        pill.textContent = s.status; pill.className = "pill " + s.status;
        const mini = row.querySelector('[data-field="stages"]');
        mini.innerHTML = s.stages.map((st) => `<i class="${st.status || ""}" title="stage ${st.number}: ${st.status || ""} ${st.percent}%"></i>`).join("");
        if (s.active) still++; else delete row.dataset.active;
      } catch (err) { still++; }
    }
    if (still) setTimeout(poll, 2000);
  }
  setTimeout(poll, 1500);
})();

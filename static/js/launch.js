// Launch page: show the fields of the chosen source, load a saved config, validate the YAML inline.
(function () {
  const form = document.getElementById("launch-form");
  if (!form) return;
  const videoId = document.getElementById("id_video_id");
  if (videoId) videoId.setAttribute("list", "video-ids");
  function showSource() {
    const picked = form.querySelector('input[name="source"]:checked');
    const value = picked ? picked.value : "upload";
    form.querySelectorAll("[data-source]").forEach((el) => el.classList.toggle("hidden", el.dataset.source !== value));
  }
  form.querySelectorAll('input[name="source"]').forEach((r) => r.addEventListener("change", showSource));
  showSource();

  const editor = document.getElementById("id_config_yaml");
  const texts = JSON.parse(document.getElementById("config-texts").textContent);
  const defaultText = JSON.parse(document.getElementById("default-text").textContent);
  const base = document.getElementById("id_base_config");
  if (base) base.addEventListener("change", () => { editor.value = base.value ? texts[base.value] : defaultText; validate(); });

  const state = document.getElementById("config-state");
  const errors = document.getElementById("config-errors");
  const diff = document.getElementById("config-diff");
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  let timer = null;
  async function validate() {
    const body = new FormData();
    body.append("config_yaml", editor.value);
    body.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    state.textContent = "checking…"; state.className = "pill";
    try {
      const r = await fetch(form.getAttribute("data-validate-url"), { method: "POST", body, headers: { Accept: "application/json" } });
      const res = await r.json();
      state.textContent = res.valid ? "valid" : res.errors.length + " error(s)";
      state.className = "pill " + (res.valid ? "ok" : "bad");
      errors.innerHTML = res.errors.map((e) => `<li>${esc(e)}</li>`).join("");
      errors.classList.toggle("hidden", res.valid);
      diff.innerHTML = res.diff.split("\n").map((l) => {
        const cls = l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : l.startsWith("@@") ? "hunk" : "";
        return cls ? `<span class="${cls}">${esc(l)}</span>` : esc(l);
      }).join("\n") || "(identical to the default)";
    } catch (e) { state.textContent = "could not check"; }
  }
  editor.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 500); });
  validate();
})();

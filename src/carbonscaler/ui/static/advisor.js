/* The what-if page: the form's state lives in the URL; results stream in with progress and
   can be cancelled (closing the request stops the sweep on the server). */
"use strict";

(() => {
  const form = document.getElementById("advisor-form");
  const results = document.getElementById("results");
  const status = document.getElementById("run-status");
  const bar = document.getElementById("progress-bar");
  const label = document.getElementById("progress-label");
  const cancel = document.getElementById("cancel");
  const problems = document.getElementById("problems");
  let running = null; // the AbortController of the request under way
  let debounce = 0;

  const VIEW_ONLY = ["focus", "show", "start"];

  function currentParams() {
    return new URLSearchParams(window.location.search);
  }

  /* The form as URL parameters, keeping the view-only ones already in the URL. */
  function formParams() {
    const params = new URLSearchParams();
    const data = new FormData(form);
    for (const [key, value] of data.entries()) {
      if (typeof value === "string" && value.trim() !== "") params.append(key, value.trim());
    }
    const old = currentParams();
    for (const key of VIEW_ONLY) {
      if (old.has(key)) params.set(key, old.get(key));
    }
    return params;
  }

  function showProblems(list) {
    problems.replaceChildren();
    if (!list.length) {
      problems.hidden = true;
      return;
    }
    const ul = document.createElement("ul");
    for (const text of list) {
      const li = document.createElement("li");
      li.textContent = text;
      ul.appendChild(li);
    }
    problems.appendChild(ul);
    problems.hidden = false;
  }

  function setProgress(done, total, text) {
    status.hidden = false;
    if (total > 0) {
      bar.max = total;
      bar.value = done;
    } else {
      bar.removeAttribute("value");
    }
    label.textContent = total > 0 ? `${text} (${done}/${total})` : text;
  }

  function finish(text) {
    running = null;
    cancel.disabled = true;
    label.textContent = text;
    if (!text) status.hidden = true;
    results.removeAttribute("aria-busy");
  }

  async function run() {
    if (running) running.abort();
    const controller = new AbortController();
    running = controller;
    cancel.disabled = false;
    results.setAttribute("aria-busy", "true");
    showProblems([]);
    setProgress(0, 0, "starting");
    let refused;
    try {
      refused = await streamEvents(
        "/api/advisor/stream?" + currentParams().toString(),
        controller.signal,
        handle,
      );
    } catch (error) {
      if (controller.signal.aborted) return;
      finish("");
      showProblems([`${error.stage || "the request failed"}: ${error}`]);
      return;
    }
    if (refused) {
      finish("");
      showProblems(refused);
      results.replaceChildren();
      return;
    }
    if (running === controller) finish("");
  }

  function handle(event) {
    if (event.event === "progress") {
      setProgress(event.done, event.total, event.label);
    } else if (event.event === "result") {
      results.innerHTML = event.html;
      finish("");
      drawCharts(event.charts);
      wireResults();
      loadSchedule();
    } else if (event.event === "error") {
      finish("");
      results.replaceChildren();
      showProblems([event.detail]);
    }
  }

  function drawCharts(charts) {
    const zero = "carbon-agnostic (0 %)";
    const yTitle = "saved vs carbon-agnostic (%)";
    Charts.ranges(document.getElementById("chart-distribution"), {
      rows: charts.distribution,
      yTitle: yTitle,
      xTitle: "policy (every start time of the trace)",
      zeroLabel: zero,
      label: "Savings over start times by policy",
    });
    Charts.categoryLines(document.getElementById("chart-hour"), {
      labels: charts.by_hour.labels,
      series: charts.by_hour.series,
      yTitle: "mean " + yTitle,
      xTitle: "hour of day the job arrives (UTC)",
      zeroLabel: zero,
      label: "Mean saving by hour of arrival",
    });
    Charts.categoryLines(document.getElementById("chart-month"), {
      labels: charts.by_month.labels,
      series: charts.by_month.series,
      yTitle: "mean " + yTitle,
      xTitle: "month the job arrives",
      zeroLabel: zero,
      label: "Mean saving by month of arrival",
    });
  }

  /* Change a view-only parameter: the URL says it, and a reload shows the same. */
  function setView(key, value) {
    const params = currentParams();
    if (value) params.set(key, value);
    else params.delete(key);
    history.replaceState(null, "", "?" + params.toString());
  }

  function wireResults() {
    const focus = document.getElementById("focus");
    if (focus) {
      focus.addEventListener("change", () => {
        setView("focus", focus.value);
        setView("start", "");
        run();
      });
    }
    const show = document.getElementById("show");
    show.addEventListener("change", () => {
      setView("show", show.value);
      loadSchedule();
    });
    const start = document.getElementById("start");
    start.addEventListener("change", () => {
      setView("start", start.value ? start.value + "Z" : "");
      loadSchedule();
    });
  }

  async function loadSchedule() {
    const box = document.getElementById("chart-schedule");
    const caption = document.getElementById("schedule-caption");
    const start = document.getElementById("start");
    if (!box) return;
    box.setAttribute("aria-busy", "true");
    let data;
    try {
      const response = await fetch("/api/advisor/schedule?" + currentParams().toString());
      data = await response.json();
      if (!response.ok) throw new Error(data.detail);
    } catch (error) {
      caption.textContent = String(error.message || error);
      box.replaceChildren();
      box.removeAttribute("aria-busy");
      return;
    }
    box.removeAttribute("aria-busy");
    start.min = data.starts.first;
    start.max = data.starts.last;
    start.value = data.start.replace("Z", "");
    Charts.schedule(box, {
      slotHours: data.slot_hours,
      servers: data.servers,
      carbon: data.carbon,
      deadline: data.deadline_hours,
      finish: data.completion_hours,
      maxServers: data.max_servers,
      xTitle: `hours from ${data.start.replace("T", " ").replace("Z", " UTC")}`,
      label: `Servers per slot of ${data.policy} over the carbon intensity`,
    });
    const verdict = data.deadline_met ? "met its deadline" : "MISSED its deadline";
    const saved = data.saving_pct === null ? "" :
      data.saving_pct >= 0 ? `saved ${data.saving_pct.toFixed(1)} %` :
        `emits ${(-data.saving_pct).toFixed(1)} % more`;
    caption.textContent = `${data.policy} arriving ${data.start.replace("T", " ")}: ` +
      `${data.emissions_g.toFixed(1)} g, ${saved} vs carbon-agnostic, ${verdict}` +
      (data.completion_hours === null ? " (not finished within the trace)" :
        ` (done after ${data.completion_hours.toFixed(1)} h of ${data.deadline_hours} h).`);
    caption.classList.toggle("missed-text", !data.deadline_met);
  }

  function submit() {
    history.pushState(null, "", "?" + formParams().toString());
    run();
  }

  form.addEventListener("change", (event) => {
    if (event.target.type === "file") return;
    clearTimeout(debounce);
    debounce = setTimeout(submit, 250);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(debounce);
    submit();
  });
  cancel.addEventListener("click", () => {
    if (running) {
      running.abort();
      finish("cancelled: change a field or press Simulate to run it again");
    }
  });
  window.addEventListener("popstate", () => window.location.reload());

  const upload = document.getElementById("profile-file");
  const profile = document.getElementById("profile");
  const uploadNote = document.getElementById("upload-note");
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    if (file.size > Number(upload.dataset.limit)) {
      uploadNote.textContent = `${file.name} is ${file.size} bytes; a profile may be at most ` +
        `${upload.dataset.limit} bytes`;
      return;
    }
    const body = new FormData();
    body.append("file", file);
    const response = await fetch("/api/profiles", { method: "POST", body: body });
    const data = await response.json().catch(() => ({ detail: response.statusText }));
    if (!response.ok) {
      uploadNote.textContent = String(data.detail);
      return;
    }
    uploadNote.textContent = `${data.name}: 1..${data.servers} servers` +
      (data.notes.length ? ` (${data.notes.join("; ")})` : "");
    profile.value = data.profile;
    upload.value = "";
    submit();
  });

  if (form.dataset.ready === "1") run();
})();

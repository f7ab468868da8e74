/* The what-if page: the form's state lives in the URL; results stream in with progress and
   can be cancelled (closing the request stops the sweep on the server). */
"use strict";

(() => {
  const page = streamedPage({
    form: document.getElementById("advisor-form"),
    url: "/api/advisor/stream",
    viewOnly: ["focus", "show", "start"],
    onResult: (event) => {
      drawCharts(event.charts);
      wireResults();
      loadSchedule();
    },
  });

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

  function wireResults() {
    const focus = document.getElementById("focus");
    if (focus) {
      focus.addEventListener("change", () => {
        page.setView("focus", focus.value);
        page.setView("start", "");
        page.run();
      });
    }
    const show = document.getElementById("show");
    show.addEventListener("change", () => {
      page.setView("show", show.value);
      loadSchedule();
    });
    const start = document.getElementById("start");
    start.addEventListener("change", () => {
      page.setView("start", start.value ? start.value + "Z" : "");
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
      const response = await fetch("/api/advisor/schedule?" + page.currentParams().toString());
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
    page.submit();
  });
})();

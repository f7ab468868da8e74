/* The jobs pages: the list refreshes, and a live run is followed once a second (polling:
   it survives proxies and restarts, and a run saves its state about once a second anyway). */
"use strict";

(() => {
  const list = document.getElementById("runs");
  if (list) {
    const refresh = async () => {
      try {
        const response = await fetch("/jobs/live");
        if (response.ok) list.innerHTML = (await response.json()).html;
      } catch (error) {
        /* the next refresh tries again */
      }
    };
    setInterval(refresh, 2000);
  }

  const page = document.getElementById("run");
  if (!page) return;
  const summary = document.getElementById("run-summary");
  const details = document.getElementById("run-details");
  const dataNode = document.getElementById("run-data");
  const live = page.dataset.live;

  function draw(view) {
    const state = view.state;
    if (!state) return;
    const chart = state.chart;
    Charts.schedule(document.getElementById("chart-run"), {
      slotHours: chart.slot_hours,
      servers: chart.servers,
      planned: chart.planned,
      carbon: chart.carbon,
      forecast: chart.forecast,
      deadline: chart.deadline_hours,
      finish: chart.completion_hours,
      now: chart.now_hours,
      maxServers: chart.max_servers,
      xTitle: "job hours since arrival",
      label: "Servers per slot over the carbon intensity",
    });
    const emissions = [
      { name: "this run (gCO2eq)", values: chart.emitted_cum, color: "#1b7f3b" },
    ];
    if (chart.agnostic_cum) {
      emissions.push({
        name: "carbon-agnostic, same carbon (gCO2eq)",
        values: chart.agnostic_cum,
        color: "#333333",
        dashed: true,
      });
    }
    Charts.timeLines(document.getElementById("chart-emissions"), {
      slotHours: chart.slot_hours,
      series: emissions,
      deadline: chart.deadline_hours,
      yTitle: "emitted so far (gCO2eq)",
      xTitle: "job hours since arrival",
      label: "Cumulative emissions",
    });
    Charts.timeLines(document.getElementById("chart-progress"), {
      slotHours: chart.slot_hours,
      series: [{
        name: "planned progress (%)",
        values: chart.planned_pct.slice(1),
        color: "#1f6fb4",
        dashed: true,
      }],
      points: [{
        x: chart.completion_hours === null ? chart.now_hours : chart.completion_hours,
        y: state.progress_pct,
        color: "#1b7f3b",
        legend: "progress now (%)",
        label: `progress ${state.progress_pct.toFixed(1)} % at ${state.now_hours.toFixed(2)} h`,
      }],
      include: [100],
      deadline: chart.deadline_hours,
      yTitle: "work done (%)",
      xTitle: "job hours since arrival",
      label: "Progress against the plan",
    });
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(window.location.pathname + "/live");
      if (!response.ok) throw new Error(response.statusText);
      data = await response.json();
    } catch (error) {
      setTimeout(poll, 3000);
      return;
    }
    summary.innerHTML = data.summary;
    details.innerHTML = data.details;
    draw(data.view);
    page.dataset.status = data.view.status;
    if (data.view.live) setTimeout(poll, 1000);
  }

  draw(JSON.parse(dataNode.textContent));
  if (live === "1") setTimeout(poll, 1000);
})();

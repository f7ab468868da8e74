/* The cluster page: the form's state lives in the URL; results stream in with progress and
   can be cancelled (closing the request stops the simulations on the server). */
"use strict";

(() => {
  const showField = document.getElementById("show-field");
  const page = streamedPage({
    form: document.getElementById("cluster-form"),
    url: "/api/cluster/stream",
    unit: " policies",
    onResult: (event) => {
      const command = document.getElementById("command");
      if (command) command.textContent = event.command;
      drawCharts(event.charts);
      wireResults();
    },
  });

  function drawCharts(charts) {
    const since = `hours from ${charts.start.replace("T", " ").replace("Z", " UTC")}` +
      (charts.offset_hours ? ` + ${charts.offset_hours} h` : "");
    Charts.shares(document.getElementById("chart-shares"), {
      slotHours: charts.slot_hours,
      capacity: charts.capacity,
      carbon: charts.carbon,
      jobs: charts.jobs,
      xTitle: since,
      label: `Servers of each job per slot under ${charts.policy}, with the capacity and the ` +
        "carbon intensity",
    });
    Charts.stepLines(document.getElementById("chart-used"), {
      slotHours: charts.slot_hours,
      capacity: charts.capacity,
      series: charts.used,
      yTitle: "servers in use",
      xTitle: since,
      label: "Servers in use per slot under each policy, with the capacity",
    });
  }

  function wireResults() {
    const show = document.getElementById("show");
    show.addEventListener("change", () => {
      showField.value = show.value;
      page.setView("show", show.value);
      page.run(); // cached on the server: only the chart's policy changes
    });
  }
})();

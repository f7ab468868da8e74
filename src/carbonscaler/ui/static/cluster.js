/* The cluster page: the form's state lives in the URL; results stream in with progress and
   can be cancelled (closing the request stops the simulations on the server). */
"use strict";

(() => {
  const form = document.getElementById("cluster-form");
  const results = document.getElementById("results");
  const status = document.getElementById("run-status");
  const bar = document.getElementById("progress-bar");
  const label = document.getElementById("progress-label");
  const cancel = document.getElementById("cancel");
  const problems = document.getElementById("problems");
  const showField = document.getElementById("show-field");
  let running = null; // the AbortController of the request under way
  let debounce = 0;

  function currentParams() {
    return new URLSearchParams(window.location.search);
  }

  function formParams() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) {
      if (typeof value === "string" && value.trim() !== "") params.append(key, value.trim());
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
    label.textContent = total > 0 ? `${text} (${done}/${total} policies)` : text;
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
        "/api/cluster/stream?" + currentParams().toString(),
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
      const command = document.getElementById("command");
      if (command) command.textContent = event.command;
      finish("");
      drawCharts(event.charts);
      wireResults();
    } else if (event.event === "error") {
      finish("");
      results.replaceChildren();
      showProblems([event.detail]);
    }
  }

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
      const params = currentParams();
      params.set("show", show.value);
      history.replaceState(null, "", "?" + params.toString());
      run(); // cached on the server: only the chart's policy changes
    });
  }

  function submit() {
    history.pushState(null, "", "?" + formParams().toString());
    run();
  }

  form.addEventListener("change", () => {
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

  if (form.dataset.ready === "1") run();
})();

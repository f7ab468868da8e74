// One long computation's answer, as the dashboard's /api/.../stream endpoints send it:
// newline-delimited JSON events (progress, then a result, an error or "cancelled").
// Each event goes to onEvent as it arrives. Returns the problems of a refused request (a 4xx
// with its details), or null once the stream has ended. Aborting `signal` stops reading (and
// the server stops computing); a network failure throws, with `stage` saying where.
// streamedPage below is the controller of a page that shows such a stream (the what-if and
// cluster pages).
"use strict";

async function streamEvents(url, signal, onEvent) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    error.stage = "the dashboard did not answer";
    throw error;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({ detail: response.statusText }));
    return Array.isArray(body.detail) ? body.detail : [String(body.detail)];
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.trim()) onEvent(JSON.parse(line));
      }
    }
  } catch (error) {
    error.stage = "the results stopped arriving";
    throw error;
  }
  return null;
}

/* A dashboard page whose form's state lives in the URL and whose results stream in from
   `url` with progress, and can be cancelled (closing the request stops the computation on the
   server). The page's elements go by their ids (results, run-status, progress-bar,
   progress-label, cancel, problems). `viewOnly` names the URL parameters the form does not
   hold (they survive a submit); `unit` follows the progress count; `onResult(event)` draws a
   result once its HTML is in place. Returns what the page's own controls need. */
function streamedPage({ form, url, viewOnly = [], unit = "", onResult }) {
  const results = document.getElementById("results");
  const status = document.getElementById("run-status");
  const bar = document.getElementById("progress-bar");
  const label = document.getElementById("progress-label");
  const cancel = document.getElementById("cancel");
  const problems = document.getElementById("problems");
  let running = null; // the AbortController of the request under way
  let debounce = 0;

  function currentParams() {
    return new URLSearchParams(window.location.search);
  }

  /* The form as URL parameters, keeping the view-only ones already in the URL. */
  function formParams() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) {
      if (typeof value === "string" && value.trim() !== "") params.append(key, value.trim());
    }
    const old = currentParams();
    for (const key of viewOnly) {
      if (old.has(key)) params.set(key, old.get(key));
    }
    return params;
  }

  /* Change a view-only parameter: the URL says it, and a reload shows the same. */
  function setView(key, value) {
    const params = currentParams();
    if (value) params.set(key, value);
    else params.delete(key);
    history.replaceState(null, "", "?" + params.toString());
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
    label.textContent = total > 0 ? `${text} (${done}/${total}${unit})` : text;
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
        url + "?" + currentParams().toString(),
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
      onResult(event);
    } else if (event.event === "error") {
      finish("");
      results.replaceChildren();
      showProblems([event.detail]);
    }
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

  if (form.dataset.ready === "1") run();
  return { run, submit, currentParams, setView };
}

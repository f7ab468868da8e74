// One long computation's answer, as the dashboard's /api/.../stream endpoints send it:
// newline-delimited JSON events (progress, then a result, an error or "cancelled").
// Each event goes to onEvent as it arrives. Returns the problems of a refused request (a 4xx
// with its details), or null once the stream has ended. Aborting `signal` stops reading (and
// the server stops computing); a network failure throws, with `stage` saying where.
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

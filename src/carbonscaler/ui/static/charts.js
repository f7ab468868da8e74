/* carbonscaler dashboard charts: small SVG charts drawn in the page, no library.

   Every chart has labelled axes with units, a legend, native tooltips (<title>), and is
   redrawn at its container's width (so text stays readable on a phone). Deadline misses
   are drawn in red: crosses on lines, hatched boxes, the time past a deadline shaded. */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const MISSED = "#c0392b";
  const COLORS = {
    carbonscaler: "#1b7f3b",
    exact: "#7b3fa0",
    "suspend-resume": "#1f6fb4",
    "suspend-resume-threshold": "#d07800",
    static: "#6b6b6b",
    "static-best": "#8c564b",
    agnostic: "#333333",
    joint: "#b5178a",
  };
  const FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf"];

  function color(name, i) {
    return COLORS[name] || FALLBACK[i % FALLBACK.length];
  }

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, attrs) {
    const node = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    node.textContent = content;
    return node;
  }

  /* `content` on as many lines as it needs to fit `width`, broken after hyphens; where even
     a part does not fit, the lines are turned 40 degrees so that neighbours do not overlap. */
  function wrapped(parent, x, y, content, width, attrs) {
    const parts = content.split(/(?<=-)/);
    const turn = Math.max(...parts.map((p) => p.length)) * 6.4 > width;
    const perLine = turn ? 13 : Math.max(Math.floor(width / 6.4), 4); // ~6.4 px a character
    const lines = [];
    for (const part of parts) {
      const last = lines.length - 1;
      if (last >= 0 && (lines[last] + part).length <= perLine) lines[last] += part;
      else lines.push(part);
    }
    const extra = turn ? { "text-anchor": "end", transform: `rotate(-40 ${x} ${y})` } : {};
    const node = el("text", Object.assign({ x: x, y: y }, attrs || {}, extra), parent);
    lines.forEach((line, i) => {
      const span = el("tspan", { x: x, dy: i ? 12 : 0 }, node);
      span.textContent = line;
    });
    return node;
  }

  function tip(node, content) {
    const title = el("title", {}, node);
    title.textContent = content;
  }

  /* About `count` round ticks covering [min, max]. */
  function ticks(min, max, count) {
    if (!(max > min)) {
      max = min + 1;
    }
    const raw = (max - min) / Math.max(count, 1);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return { values: out, step: step };
  }

  function fmt(value, step) {
    const digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
    return value.toFixed(digits);
  }

  function scale(d0, d1, r0, r1) {
    const span = d1 - d0 || 1;
    return (v) => r0 + ((v - d0) / span) * (r1 - r0);
  }

  /* A fresh <svg> filling `container`'s width; returns the plot box. */
  function frame(container, options) {
    container.replaceChildren();
    const width = Math.max(container.clientWidth || 0, 280);
    const narrow = width < 520;
    const height = (options.height || (narrow ? 240 : 290)) + (options.extra || 0);
    const margin = {
      top: 14,
      right: options.rightAxis ? (narrow ? 46 : 58) : 14,
      bottom: options.bottom || (options.xTitle ? 46 : 30),
      left: narrow ? 48 : 58,
    };
    const svg = el("svg", {
      width: width,
      height: height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": options.label || "",
      class: "chart-svg",
    });
    container.appendChild(svg);
    return {
      svg: svg,
      narrow: narrow,
      x0: margin.left,
      x1: width - margin.right,
      y0: height - margin.bottom,
      y1: margin.top,
      width: width,
      height: height,
    };
  }

  function yAxis(box, y, range, title, side) {
    const right = side === "right";
    const x = right ? box.x1 : box.x0;
    const t = ticks(range[0], range[1], box.narrow ? 4 : 6);
    for (const v of t.values) {
      const py = y(v);
      if (!right) {
        el("line", { x1: box.x0, x2: box.x1, y1: py, y2: py, class: "grid" }, box.svg);
      }
      text(box.svg, right ? x + 6 : x - 6, py + 4, fmt(v, t.step), {
        class: "tick",
        "text-anchor": right ? "start" : "end",
      });
    }
    el("line", { x1: x, x2: x, y1: box.y0, y2: box.y1, class: "axis" }, box.svg);
    const cx = right ? box.width - 8 : 12;
    const cy = (box.y0 + box.y1) / 2;
    text(box.svg, cx, cy, title, {
      class: "axis-title",
      "text-anchor": "middle",
      transform: `rotate(${right ? 90 : -90} ${cx} ${cy})`,
    });
  }

  function xTitle(box, title) {
    text(box.svg, (box.x0 + box.x1) / 2, box.height - 8, title, {
      class: "axis-title",
      "text-anchor": "middle",
    });
    el("line", { x1: box.x0, x2: box.x1, y1: box.y0, y2: box.y0, class: "axis" }, box.svg);
  }

  function numericX(box, x, range, title) {
    const t = ticks(range[0], range[1], box.narrow ? 5 : 10);
    for (const v of t.values) {
      const px = x(v);
      el("line", { x1: px, x2: px, y1: box.y0, y2: box.y0 + 4, class: "axis" }, box.svg);
      text(box.svg, px, box.y0 + 17, fmt(v, t.step), { class: "tick", "text-anchor": "middle" });
    }
    xTitle(box, title);
  }

  /* Legend entries: {label, color, kind: "line"|"dashed"|"box"|"hatch"|"cross"|"bar"}. */
  let patterns = 0; // pattern ids must be unique in the page

  function legend(container, items) {
    const list = document.createElement("ul");
    list.className = "legend";
    for (const item of items) {
      const entry = document.createElement("li");
      const swatch = el("svg", { width: 22, height: 12, "aria-hidden": "true" });
      const c = item.color;
      if (item.kind === "box" || item.kind === "hatch" || item.kind === "bar") {
        const id = `hatch-legend-${++patterns}`;
        if (item.kind === "hatch") hatch(el("defs", {}, swatch), id);
        el("rect", {
          x: 3,
          y: 1,
          width: 16,
          height: 10,
          fill: item.kind === "hatch" ? `url(#${id})` : c,
          "fill-opacity": item.kind === "box" ? 0.35 : 1,
          stroke: item.kind === "hatch" ? MISSED : c,
        }, swatch);
      } else if (item.kind === "cross") {
        el("path", { d: "M7 2 L15 10 M15 2 L7 10", stroke: MISSED, "stroke-width": 2 }, swatch);
      } else if (item.kind === "shade") {
        el("rect", { x: 1, y: 1, width: 20, height: 10, class: "late" }, swatch);
      } else {
        el("line", {
          x1: 1,
          x2: 21,
          y1: 6,
          y2: 6,
          stroke: c,
          "stroke-width": 2,
          "stroke-dasharray": item.kind === "dashed" ? "5 3" : item.kind === "dotted" ? "2 2" : null,
        }, swatch);
      }
      entry.appendChild(swatch);
      entry.appendChild(document.createTextNode(" " + item.label));
      list.appendChild(entry);
    }
    container.appendChild(list);
  }

  function hatch(defs, id) {
    const pattern = el("pattern", {
      id: id,
      width: 6,
      height: 6,
      patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)",
    }, defs);
    el("rect", { width: 6, height: 6, fill: "#f6d5d1" }, pattern);
    el("line", { x1: 0, x2: 0, y1: 0, y2: 6, stroke: MISSED, "stroke-width": 2 }, pattern);
  }

  /* Redraw `draw` whenever `container` changes width. */
  function responsive(container, draw) {
    draw();
    if (container._chartObserver) container._chartObserver.disconnect();
    let width = container.clientWidth;
    const observer = new ResizeObserver(() => {
      if (container.clientWidth !== width) {
        width = container.clientWidth;
        draw();
      }
    });
    observer.observe(container);
    container._chartObserver = observer;
  }

  function extent(arrays, include) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const values of arrays) {
      for (const v of values) {
        if (v === null || v === undefined || !isFinite(v)) continue;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
    for (const v of include || []) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    if (!isFinite(lo)) return [0, 1];
    const pad = (hi - lo) * 0.06 || 1;
    return [lo - pad, hi + pad];
  }

  /* Mean saving per category (hour, month) for each policy; red crosses where the policy
     missed deadlines for starts in that category. */
  function categoryLines(container, spec) {
    for (const series of spec.series) series.missesAny = series.misses.some((m) => m > 0);
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const draw = () => {
      const box = frame(plot, { xTitle: true, label: spec.label });
      const labels = spec.labels;
      const x = scale(0, Math.max(labels.length - 1, 1), box.x0 + 10, box.x1 - 10);
      const range = extent(spec.series.map((s) => s.values), [0]);
      const y = scale(range[0], range[1], box.y0, box.y1);
      yAxis(box, y, range, spec.yTitle, "left");
      const every = Math.ceil(labels.length / (box.narrow ? 8 : 24));
      labels.forEach((label, i) => {
        if (i % every) return;
        text(box.svg, x(i), box.y0 + 17, label, { class: "tick", "text-anchor": "middle" });
      });
      xTitle(box, spec.xTitle);
      el("line", { x1: box.x0, x2: box.x1, y1: y(0), y2: y(0), class: "zero" }, box.svg);
      spec.series.forEach((series, i) => {
        const c = color(series.name, i);
        const twin = series.name === "exact";
        let d = "";
        series.values.forEach((v, j) => {
          if (v === null) return;
          d += (d && series.values[j - 1] !== null ? " L" : " M") + x(j) + " " + y(v);
        });
        el("path", {
          d: d.trim(),
          fill: "none",
          stroke: c,
          "stroke-width": twin ? 1.2 : 2,
          "stroke-dasharray": series.missesAny ? "5 3" : null,
          class: "series",
          "data-series": series.name,
        }, box.svg);
        series.values.forEach((v, j) => {
          if (v === null) return;
          const missed = series.misses[j] > 0;
          const g = el("g", {}, box.svg);
          if (missed) {
            const px = x(j);
            const py = y(v);
            el("path", {
              d: `M${px - 5} ${py - 5} L${px + 5} ${py + 5} M${px + 5} ${py - 5} L${px - 5} ${py + 5}`,
              stroke: MISSED,
              "stroke-width": 2.2,
              class: "miss-mark",
            }, g);
          } else {
            el("circle", {
              cx: x(j),
              cy: y(v),
              r: twin ? 5 : 3,
              fill: twin ? "none" : c,
              stroke: c,
            }, g);
          }
          tip(g, `${series.name}, ${labels[j]}: saved ${v.toFixed(1)} %` +
            (missed ? `; ${series.misses[j]} deadline misses` : ""));
        });
      });
    };
    responsive(plot, draw);
    const items = spec.series.map((s, i) => ({
      label: s.name + (s.missesAny ? " (misses deadlines)" : ""),
      color: color(s.name, i),
      kind: s.missesAny ? "dashed" : "line",
    }));
    items.push({ label: spec.zeroLabel, color: "#888", kind: "dashed" });
    if (spec.series.some((s) => s.missesAny)) {
      items.push({ label: "starts with deadline misses", kind: "cross" });
    }
    legend(container, items);
  }

  /* Percentiles of the saving over start times per policy: whiskers p5–p95, box p25–p75,
     the median as a bar and the mean as a dot; a policy that misses deadlines is hatched. */
  function ranges(container, spec) {
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const rows = spec.rows;
    const pattern = `hatch-ranges-${++patterns}`;
    const draw = () => {
      const narrow = (plot.clientWidth || 0) < 520; // turned labels need more room
      const box = frame(plot, {
        xTitle: true,
        label: spec.label,
        bottom: narrow ? 112 : 84,
        extra: narrow ? 60 : 34,
      });
      hatch(el("defs", {}, box.svg), pattern);
      const range = extent(rows.map((r) => [r.p5, r.p95]), [0]);
      const y = scale(range[0], range[1], box.y0, box.y1);
      yAxis(box, y, range, spec.yTitle, "left");
      xTitle(box, spec.xTitle);
      el("line", { x1: box.x0, x2: box.x1, y1: y(0), y2: y(0), class: "zero" }, box.svg);
      const band = (box.x1 - box.x0) / Math.max(rows.length, 1);
      rows.forEach((row, i) => {
        const cx = box.x0 + band * (i + 0.5);
        const w = Math.min(band * 0.5, 60);
        const c = color(row.policy, i);
        const missed = row.misses > 0;
        const g = el("g", { class: "range" + (missed ? " missed" : ""), "data-policy": row.policy },
          box.svg);
        el("line", { x1: cx, x2: cx, y1: y(row.p5), y2: y(row.p95), stroke: "#444" }, g);
        for (const v of [row.p5, row.p95]) {
          el("line", { x1: cx - w / 4, x2: cx + w / 4, y1: y(v), y2: y(v), stroke: "#444" }, g);
        }
        el("rect", {
          x: cx - w / 2,
          y: y(row.p75),
          width: w,
          height: Math.max(y(row.p25) - y(row.p75), 1),
          fill: missed ? `url(#${pattern})` : c,
          "fill-opacity": missed ? 1 : 0.35,
          stroke: missed ? MISSED : c,
        }, g);
        el("line", { x1: cx - w / 2, x2: cx + w / 2, y1: y(row.median), y2: y(row.median),
          stroke: missed ? MISSED : c, "stroke-width": 2.5 }, g);
        el("circle", { cx: cx, cy: y(row.mean), r: 3, fill: "#111" }, g);
        tip(g, `${row.policy}: mean ${row.mean.toFixed(1)} %, median ${row.median.toFixed(1)} %,` +
          ` 5th–95th percentile ${row.p5.toFixed(1)} to ${row.p95.toFixed(1)} %` +
          (missed ? `; misses ${row.miss_pct.toFixed(1)} % of deadlines` : ""));
        wrapped(box.svg, cx, box.y0 + 15, row.policy, band - 4, {
          class: "tick" + (missed ? " missed-text" : ""),
          "text-anchor": "middle",
        });
      });
    };
    responsive(plot, draw);
    const items = [
      { label: "middle half of start times (box), 5th–95th percentile (whiskers)", color: "#1b7f3b", kind: "box" },
      { label: "median (bar), mean (dot)", color: "#111", kind: "line" },
      { label: spec.zeroLabel, color: "#888", kind: "dashed" },
    ];
    if (rows.some((r) => r.misses > 0)) {
      items.splice(1, 0, { label: "misses deadlines", kind: "hatch" });
    }
    legend(container, items);
  }

  /* Servers per slot (bars; a plan as a step line) over the carbon intensity (right axis),
     with the deadline, the finish, "now" for a live run, and the time past the deadline
     shaded red. */
  function schedule(container, spec) {
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const slot = spec.slotHours;
    const slots = Math.max(spec.servers.length, (spec.planned || []).length, spec.carbon.length);
    const end = Math.max(slots * slot, spec.deadline);
    const draw = () => {
      const box = frame(plot, { xTitle: true, rightAxis: true, label: spec.label });
      const x = scale(0, end, box.x0, box.x1);
      const topServers = Math.max(spec.maxServers || 1, ...spec.servers.map((v) => v || 0),
        ...(spec.planned || [0])) + 0.5;
      const ys = scale(0, topServers, box.y0, box.y1);
      const carbonValues = spec.carbon.concat(spec.forecast || []);
      const cr = extent([carbonValues], [0]);
      cr[0] = 0;
      const yc = scale(cr[0], cr[1], box.y0, box.y1);
      if (spec.deadline < end) {
        el("rect", { x: x(spec.deadline), y: box.y1, width: x(end) - x(spec.deadline),
          height: box.y0 - box.y1, class: "late" }, box.svg);
      }
      yAxis(box, ys, [0, topServers], "servers", "left");
      yAxis(box, yc, cr, "gCO2eq/kWh", "right");
      numericX(box, x, [0, end], spec.xTitle);
      spec.servers.forEach((v, i) => {
        if (!v) return;
        const bar = el("rect", {
          x: x(i * slot) + 0.5,
          y: ys(v),
          width: Math.max(x(slot) - x(0) - 1, 1),
          height: ys(0) - ys(v),
          class: "bar" + (i * slot >= spec.deadline ? " late-bar" : ""),
        }, box.svg);
        tip(bar, `hour ${(i * slot).toFixed(1)}: ${v.toFixed(2)} servers`);
      });
      if (spec.planned && spec.planned.length) {
        let d = "";
        spec.planned.forEach((v, i) => {
          d += `${i ? " L" : "M"}${x(i * slot)} ${ys(v)} L${x((i + 1) * slot)} ${ys(v)}`;
        });
        el("path", { d: d, class: "planned" }, box.svg);
      }
      const step = (values, cls, offset) => {
        let d = "";
        values.forEach((v, i) => {
          if (v === null || v === undefined) return;
          const j = i + (offset || 0);
          const move = d === "" || values[i - 1] === null || values[i - 1] === undefined;
          d += `${move ? " M" : " L"}${x(j * slot)} ${yc(v)} L${x((j + 1) * slot)} ${yc(v)}`;
        });
        if (d) el("path", { d: d.trim(), class: cls }, box.svg);
      };
      if (spec.forecast) {
        const ahead = spec.forecast.map((v, i) =>
          spec.carbon[i] === null || spec.carbon[i] === undefined ? v : null);
        step(ahead, "forecast");
      }
      step(spec.carbon, "carbon");
      const mark = (at, cls, label) => {
        if (at === null || at === undefined) return;
        const line = el("line", { x1: x(at), x2: x(at), y1: box.y0, y2: box.y1, class: cls },
          box.svg);
        tip(line, label);
      };
      mark(spec.deadline, "deadline", `deadline: ${spec.deadline} h`);
      mark(spec.finish, "finish", `finished: ${spec.finish === null ? "" : spec.finish.toFixed(2)} h`);
      if (spec.now !== null && spec.now !== undefined && spec.finish === null) {
        mark(spec.now, "now", `now: ${spec.now.toFixed(2)} h`);
      }
    };
    responsive(plot, draw);
    const items = [{ label: "servers (mean over the slot)", color: "#4c9a2a", kind: "bar" }];
    if (spec.planned && spec.planned.length) {
      items.push({ label: "planned servers", color: "#1f6fb4", kind: "dotted" });
    }
    items.push({ label: "carbon intensity (gCO2eq/kWh)", color: "#444", kind: "line" });
    if (spec.forecast) items.push({ label: "forecast ahead", color: "#999", kind: "dashed" });
    items.push({ label: `deadline (${spec.deadline} h)`, color: MISSED, kind: "dashed" });
    if (spec.finish !== null && spec.finish !== undefined) {
      items.push({ label: `finished (${spec.finish.toFixed(1)} h)`, color: "#1f77b4", kind: "dotted" });
    } else if (spec.now !== null && spec.now !== undefined) {
      items.push({ label: "now", color: "#111", kind: "dotted" });
    }
    if (spec.deadline < end) items.push({ label: "past the deadline", kind: "shade" });
    legend(container, items);
  }

  /* Lines over job hours (cumulative emissions, progress), values at slot ends. */
  function timeLines(container, spec) {
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const slot = spec.slotHours;
    const longest = Math.max(...spec.series.map((s) => s.values.length), 1);
    const end = Math.max(longest * slot, spec.deadline || 0);
    const draw = () => {
      const box = frame(plot, { xTitle: true, label: spec.label });
      const x = scale(0, end, box.x0, box.x1);
      const range = extent(spec.series.map((s) => s.values), [0].concat(spec.include || []));
      range[0] = Math.min(range[0], 0);
      const y = scale(range[0], range[1], box.y0, box.y1);
      yAxis(box, y, range, spec.yTitle, "left");
      numericX(box, x, [0, end], spec.xTitle);
      spec.series.forEach((series, i) => {
        let d = `M${x(0)} ${y(series.start || 0)}`;
        series.values.forEach((v, j) => {
          if (v !== null) d += ` L${x((j + (series.offset || 1)) * slot)} ${y(v)}`;
        });
        el("path", {
          d: d,
          fill: "none",
          stroke: series.color || color(series.name, i),
          "stroke-width": 2,
          "stroke-dasharray": series.dashed ? "5 3" : null,
          class: "series",
          "data-series": series.name,
        }, box.svg);
      });
      for (const point of spec.points || []) {
        const g = el("g", {}, box.svg);
        el("circle", { cx: x(point.x), cy: y(point.y), r: 5, fill: point.color || "#111" }, g);
        tip(g, point.label);
      }
      if (spec.deadline) {
        el("line", { x1: x(spec.deadline), x2: x(spec.deadline), y1: box.y0, y2: box.y1,
          class: "deadline" }, box.svg);
      }
    };
    responsive(plot, draw);
    const items = spec.series.map((s, i) => ({
      label: s.name,
      color: s.color || color(s.name, i),
      kind: s.dashed ? "dashed" : "line",
    }));
    for (const point of spec.points || []) {
      items.push({ label: point.legend, color: point.color || "#111", kind: "line" });
    }
    if (spec.deadline) {
      items.push({ label: `deadline (${spec.deadline} h)`, color: MISSED, kind: "dashed" });
    }
    legend(container, items);
  }

  /* A shared cluster per slot: each job's servers stacked (one colour per job), the capacity
     as a dashed step line, and the carbon intensity on the right axis. */
  function shares(container, spec) {
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const slot = spec.slotHours;
    const slots = spec.capacity.length;
    const end = Math.max(slots * slot, slot);
    const jobColor = (i) => `hsl(${(i * 137.508) % 360}, 55%, 52%)`;
    const anyMissed = spec.jobs.some((job) => !job.deadline_met);
    const draw = () => {
      const box = frame(plot, { xTitle: true, rightAxis: true, label: spec.label });
      const x = scale(0, end, box.x0, box.x1);
      const totals = new Array(slots).fill(0);
      for (const job of spec.jobs) job.servers.forEach((v, i) => { totals[i] += v || 0; });
      const top = Math.max(...spec.capacity, ...totals, 1) * 1.08;
      const ys = scale(0, top, box.y0, box.y1);
      const cr = extent([spec.carbon], [0]);
      cr[0] = 0;
      const yc = scale(cr[0], cr[1], box.y0, box.y1);
      yAxis(box, ys, [0, top], "servers", "left");
      yAxis(box, yc, cr, "gCO2eq/kWh", "right");
      numericX(box, x, [0, end], spec.xTitle);
      const base = new Array(slots).fill(0);
      const width = Math.max(x(slot) - x(0) - (x(slot) - x(0) > 3 ? 0.5 : 0), 0.5);
      spec.jobs.forEach((job, j) => {
        const g = el("g", { "data-job": job.name, fill: jobColor(j) }, box.svg);
        job.servers.forEach((v, i) => {
          if (!v) return;
          const bar = el("rect", {
            x: x(i * slot),
            y: ys(base[i] + v),
            width: width,
            height: Math.max(ys(base[i]) - ys(base[i] + v), 0.5),
            stroke: job.deadline_met ? null : MISSED,
            "stroke-width": job.deadline_met ? null : 0.8,
          }, g);
          tip(bar, `${job.name}, hour ${(i * slot).toFixed(0)}: ${v.toFixed(2)} servers` +
            (job.deadline_met ? "" : " (misses its deadline)"));
          base[i] += v;
        });
      });
      let d = "";
      spec.capacity.forEach((k, i) => {
        d += `${i ? " L" : "M"}${x(i * slot)} ${ys(k)} L${x((i + 1) * slot)} ${ys(k)}`;
      });
      el("path", { d: d, class: "capacity", fill: "none", stroke: MISSED,
        "stroke-width": 1.6, "stroke-dasharray": "6 3" }, box.svg);
      let c = "";
      spec.carbon.forEach((v, i) => {
        if (v === null) return;
        const move = c === "" || spec.carbon[i - 1] === null;
        c += `${move ? " M" : " L"}${x(i * slot)} ${yc(v)} L${x((i + 1) * slot)} ${yc(v)}`;
      });
      if (c) el("path", { d: c.trim(), class: "carbon" }, box.svg);
    };
    responsive(plot, draw);
    const items = [
      { label: `servers of each job (one colour per job, ${spec.jobs.length} jobs; hover for its name)`,
        color: "#5b8fc7", kind: "bar" },
      { label: "capacity (servers)", color: MISSED, kind: "dashed" },
      { label: "carbon intensity (gCO2eq/kWh, right axis)", color: "#444", kind: "line" },
    ];
    if (anyMissed) items.push({ label: "job that misses its deadline (red outline)", kind: "hatch" });
    legend(container, items);
  }

  /* Step lines per slot (servers in use under each policy), with the capacity dashed. */
  function stepLines(container, spec) {
    const plot = document.createElement("div");
    container.replaceChildren(plot);
    const slot = spec.slotHours;
    const slots = Math.max(spec.capacity.length, ...spec.series.map((s) => s.values.length));
    const end = Math.max(slots * slot, slot);
    const draw = () => {
      const box = frame(plot, { xTitle: true, label: spec.label });
      const x = scale(0, end, box.x0, box.x1);
      const top = Math.max(...spec.capacity,
        ...spec.series.map((s) => Math.max(...s.values.map((v) => v || 0))), 1) * 1.08;
      const y = scale(0, top, box.y0, box.y1);
      yAxis(box, y, [0, top], spec.yTitle, "left");
      numericX(box, x, [0, end], spec.xTitle);
      const path = (values) => {
        let d = "";
        values.forEach((v, i) => {
          if (v === null) return;
          d += `${d ? " L" : "M"}${x(i * slot)} ${y(v)} L${x((i + 1) * slot)} ${y(v)}`;
        });
        return d;
      };
      el("path", { d: path(spec.capacity), fill: "none", stroke: MISSED, "stroke-width": 1.6,
        "stroke-dasharray": "6 3", class: "capacity" }, box.svg);
      spec.series.forEach((series, i) => {
        const line = el("path", {
          d: path(series.values),
          fill: "none",
          stroke: color(series.name, i),
          "stroke-width": 1.8,
          "stroke-dasharray": series.missed ? "4 2" : null,
          class: "series",
          "data-series": series.name,
        }, box.svg);
        tip(line, series.name + (series.missed ? " (misses deadlines)" : ""));
      });
    };
    responsive(plot, draw);
    const items = spec.series.map((s, i) => ({
      label: s.name + (s.missed ? " (misses deadlines)" : ""),
      color: color(s.name, i),
      kind: s.missed ? "dashed" : "line",
    }));
    items.push({ label: "capacity (servers)", color: MISSED, kind: "dashed" });
    legend(container, items);
  }

  return { categoryLines, ranges, schedule, shares, stepLines, timeLines, color };
})();

// A small inline SVG bar chart (the 30 daily download counts of a plugin).

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The smallest "nice" number (1, 2, 5 x 10^n) at or above `value`.
export function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function shortDate(iso) {
  const [, month, day] = iso.split("-");
  const names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  return `${names[Number(month) - 1] ?? month} ${Number(day)}`;
}

// points: [{date: "YYYY-MM-DD", count}], oldest first.
export function barChart(points, { width = 560, height = 190, label = "Downloads per day" } = {}) {
  const pad = { top: 12, right: 8, bottom: 24, left: 34 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const max = niceCeiling(Math.max(0, ...points.map((p) => p.count)));
  const total = points.reduce((sum, p) => sum + p.count, 0);
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": `${label}: ${total} in ${points.length} days`,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(el("title", {}, `${label}: ${total} in the last ${points.length} days`));

  const ticks = 4;
  for (let t = 0; t <= ticks; t += 1) {
    const value = (max / ticks) * t;
    const y = pad.top + innerH - (innerH * t) / ticks;
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "chart-grid" }));
    const text = Number.isInteger(value) ? String(value) : value.toFixed(1);
    svg.append(el("text", { x: pad.left - 6, y: y + 4, class: "chart-axis", "text-anchor": "end" }, text));
  }

  const slot = innerW / Math.max(points.length, 1);
  const barW = Math.max(2, slot * 0.72);
  points.forEach((p, i) => {
    const h = max ? (innerH * p.count) / max : 0;
    const x = pad.left + slot * i + (slot - barW) / 2;
    const y = pad.top + innerH - h;
    const bar = el("rect", {
      x: x.toFixed(2),
      y: y.toFixed(2),
      width: barW.toFixed(2),
      height: Math.max(h, p.count ? 1 : 0).toFixed(2),
      rx: Math.min(3, barW / 3).toFixed(2),
      class: p.count ? "chart-bar" : "chart-bar empty",
      "data-date": p.date,
      "data-count": p.count,
    });
    bar.append(el("title", {}, `${p.date}: ${p.count} download${p.count === 1 ? "" : "s"}`));
    svg.append(bar);
  });

  const labelled = new Set([0, Math.floor((points.length - 1) / 2), points.length - 1]);
  for (const i of labelled) {
    if (!points[i]) continue;
    const x = pad.left + slot * i + slot / 2;
    const anchor = i === 0 ? "start" : i === points.length - 1 ? "end" : "middle";
    const shift = anchor === "start" ? -slot / 2 : anchor === "end" ? slot / 2 : 0;
    svg.append(el("text", { x: x + shift, y: height - 6, class: "chart-axis", "text-anchor": anchor },
      shortDate(points[i].date)));
  }
  svg.append(el("line", {
    x1: pad.left, x2: width - pad.right, y1: pad.top + innerH, y2: pad.top + innerH, class: "chart-base",
  }));
  return svg;
}

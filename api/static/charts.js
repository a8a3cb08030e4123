// Small canvas charts for the dashboard: lines and bars over a shared x axis, sized for HiDPI screens.
"use strict";

const Charts = (() => {
  const AXIS = "#8493a5";
  const GRID = "#222c37";

  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 300;
    const height = canvas.clientHeight || 150;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  function short(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2);
    if (a === 0) return "0";
    return v.toPrecision(2);
  }

  // series: [{values: [number|null], color, dash, kind: "line"|"bar", width}]; x: labels (ticks).
  // opts: {min, max, hline: {value, color}, zeroBased, integer (whole-number labels)}
  function draw(canvas, x, series, opts = {}) {
    const { ctx, width, height } = prepare(canvas);
    const pad = { left: 40, right: 8, top: 8, bottom: 18 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    const all = series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
    if (opts.hline) all.push(opts.hline.value);
    if (!x.length || !all.length) {
      ctx.fillStyle = AXIS;
      ctx.font = "11px sans-serif";
      ctx.fillText("no data yet", pad.left + 8, pad.top + h / 2);
      return;
    }
    let lo = opts.min ?? Math.min(...all);
    let hi = opts.max ?? Math.max(...all);
    if (opts.zeroBased) lo = Math.min(0, lo);
    if (hi - lo < 1e-12) { hi += Math.abs(hi) * 0.05 || 1; lo -= Math.abs(lo) * 0.05; }
    if (opts.integer) {
      // Counts: gridlines on whole numbers (four lines, so a multiple of three on top).
      hi = Math.max(3, Math.ceil(hi / 3) * 3);
    } else {
      const span = hi - lo;
      lo -= opts.zeroBased ? 0 : span * 0.08;
      hi += span * 0.08;
    }
    const n = x.length;
    const px = (i) => pad.left + (n === 1 ? w / 2 : (i * w) / (n - 1));
    const py = (v) => pad.top + h - ((v - lo) / (hi - lo)) * h;

    ctx.font = "10px sans-serif";
    ctx.lineWidth = 1;
    for (let k = 0; k <= 3; k++) {
      const v = lo + ((hi - lo) * k) / 3;
      const y = py(v);
      ctx.strokeStyle = GRID;
      ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(pad.left + w, y); ctx.stroke();
      ctx.fillStyle = AXIS;
      ctx.textAlign = "right";
      ctx.fillText(opts.integer ? String(Math.round(v)) : short(v), pad.left - 4, y + 3);
    }
    ctx.textAlign = "left";
    ctx.fillText(String(x[0]), pad.left, height - 4);
    ctx.textAlign = "right";
    ctx.fillText(String(x[n - 1]), pad.left + w, height - 4);

    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      if (s.kind === "bar") {
        const bw = Math.max(1, (w / n) * 0.7);
        s.values.forEach((v, i) => {
          if (v === null || !Number.isFinite(v) || v === 0) return;
          const y = py(v);
          ctx.fillRect(px(i) - bw / 2, y, bw, py(Math.max(lo, 0)) - y);
        });
        continue;
      }
      ctx.lineWidth = s.width || 1.6;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      let drawing = false;
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { drawing = false; return; }
        if (drawing) ctx.lineTo(px(i), py(v)); else ctx.moveTo(px(i), py(v));
        drawing = true;
      });
      ctx.stroke();
      ctx.setLineDash([]);
    }
    if (opts.hline) {
      ctx.strokeStyle = opts.hline.color;
      ctx.setLineDash([2, 3]);
      ctx.beginPath(); ctx.moveTo(pad.left, py(opts.hline.value)); ctx.lineTo(pad.left + w, py(opts.hline.value));
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  // A tiny inline SVG sparkline (no axes); gaps where a value is null.
  function sparkline(values, width = 90, height = 20, color = "#3ecf8e") {
    const nums = values.filter((v) => v !== null && Number.isFinite(v));
    if (!nums.length) return `<svg class="spark" width="${width}" height="${height}"></svg>`;
    const lo = Math.min(...nums), hi = Math.max(...nums);
    const span = hi - lo || 1;
    const n = values.length;
    let d = "";
    let pen = "M";
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { pen = "M"; return; }
      const xx = n === 1 ? width / 2 : (i * (width - 2)) / (n - 1) + 1;
      const yy = height - 2 - ((v - lo) / span) * (height - 4);
      d += `${pen}${xx.toFixed(1)},${yy.toFixed(1)}`;
      pen = "L";
    });
    const last = nums[nums.length - 1];
    return `<svg class="spark" width="${width}" height="${height}"><title>ROI per tick, last ${last.toFixed(2)}</title>` +
      `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.4"/></svg>`;
  }

  return { draw, sparkline };
})();

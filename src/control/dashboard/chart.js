// A small time chart on a canvas: a few series of (time, value) points, the newest
// `capacity` kept, drawn as lines under an automatic y scale with a legend.
"use strict";

class TimeChart {
  constructor(canvas, series, capacity = 120) {
    this.canvas = canvas;
    this.series = series; // [{ label, color }]
    this.capacity = capacity;
    this.times = [];
    this.values = series.map(() => []);
  }

  push(time, values) {
    this.times.push(time);
    values.forEach((v, i) => this.values[i].push(v));
    if (this.times.length > this.capacity) {
      this.times.shift();
      this.values.forEach((s) => s.shift());
    }
    this.draw();
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth, height = this.canvas.clientHeight;
    if (this.canvas.width !== width * ratio || this.canvas.height !== height * ratio) {
      this.canvas.width = width * ratio;
      this.canvas.height = height * ratio;
    }
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 56, right = 8, top = 20, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    let max = 0;
    this.values.forEach((s) => s.forEach((v) => { if (v > max) max = v; }));
    max = niceCeiling(max);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#e4e7ec";
    g.fillStyle = "#667085";
    g.textAlign = "right";
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + plotW, y); g.stroke();
      g.fillText(formatNumber((max * i) / 4), left - 6, y + 4);
    }
    const n = this.times.length;
    if (n > 1) {
      const t0 = this.times[0], span = Math.max(1, this.times[n - 1] - t0);
      this.values.forEach((s, k) => {
        g.strokeStyle = this.series[k].color;
        g.lineWidth = 2;
        g.beginPath();
        s.forEach((v, i) => {
          const x = left + (plotW * (this.times[i] - t0)) / span;
          const y = top + plotH - (max > 0 ? (plotH * v) / max : 0);
          if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
        });
        g.stroke();
      });
      g.textAlign = "left";
      g.fillStyle = "#667085";
      g.fillText(`${Math.round(span / 1000)} s`, left, height - 4);
    }
    let x = left;
    g.textAlign = "left";
    this.series.forEach((s) => {
      g.fillStyle = s.color;
      g.fillRect(x, 6, 10, 10);
      g.fillStyle = "#1d2330";
      g.fillText(s.label, x + 14, 15);
      x += 24 + g.measureText(s.label).width;
    });
  }
}

function niceCeiling(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

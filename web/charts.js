// Charts on Chart.js (Debian's libjs-chart.js, loaded as a classic script: window.Chart), each
// with a text alternative: the canvas is role="img" with a label, and a data table follows in a
// <details>. Without Chart.js (package missing) the tables alone remain.
//
//   const c = chartBlock({ title, label, height, table: {head: [...], rows: [[...]]} });
//   section.append(c.el);  c.draw(config);   // a Chart.js config; c.chart is the instance
//   destroyCharts(root);                     // when the page goes away

import { h } from './util.js';

export const haveChart = () => typeof window.Chart === 'function';

// Colours from the stylesheet, so charts follow the light/dark theme.
export function palette() {
  const cs = getComputedStyle(document.documentElement);
  const v = (name, dflt) => cs.getPropertyValue(name).trim() || dflt;
  return {
    text: v('--fg', '#1d2430'),
    grid: v('--grid', '#d9dee7'),
    a: v('--chart-a', '#2f6fd6'),
    b: v('--chart-b', '#e07b22'),
    c: v('--chart-c', '#2c9a5a'),
    d: v('--chart-d', '#8a5ad6'),
    muted: v('--chart-muted', '#9aa5b5'),
  };
}

function reducedMotion() {
  return window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;
}

let defaultsSet = false;
function setDefaults() {
  if (defaultsSet || !haveChart()) return;
  defaultsSet = true;
  const p = palette();
  const C = window.Chart;
  C.defaults.color = p.text;
  C.defaults.borderColor = p.grid;
  C.defaults.font.family = getComputedStyle(document.body).fontFamily;
  C.defaults.maintainAspectRatio = false;
  C.defaults.responsive = true;
  if (reducedMotion()) C.defaults.animation = false;
  else C.defaults.animation = { duration: 250 };
}

// Long layer names ("/features/3/conv/Conv") would eat a narrow chart: keep their tails.
export function tickLabel(s, max = 22) {
  s = String(s);
  return s.length > max ? `…${s.slice(s.length - max + 1)}` : s;
}

export function chartBlock({ title, label, height = 300, table, note }) {
  const canvas = h('canvas', { role: 'img', 'aria-label': label || title });
  const box = h('div', { class: 'chart', style: null }, canvas);
  box.style.height = `${height}px`;
  const details = table ? dataTable(title, table) : null;
  const el = h('figure', { class: 'chart-figure' },
    title ? h('figcaption', {}, title) : null,
    note ? h('p', { class: 'hint' }, note) : null,
    haveChart() ? box : h('p', { class: 'hint' }, 'Chart.js is not available (install libjs-chart.js); the data follows as a table.'),
    details);
  if (details && !haveChart()) details.open = true;
  const block = {
    el,
    canvas,
    chart: null,
    draw(config) {
      if (!haveChart()) return null;
      setDefaults();
      if (block.chart) block.chart.destroy();
      block.chart = new window.Chart(canvas, config);
      return block.chart;
    },
  };
  return block;
}

function dataTable(title, { head, rows }) {
  return h('details', { class: 'data-table' },
    h('summary', {}, 'Data table'),
    h('div', { class: 'table-wrap' },
      h('table', {},
        h('caption', { class: 'sr-only' }, title || 'Chart data'),
        h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', {}, c)))))))));
}

export function destroyCharts(root) {
  if (!haveChart() || !root) return;
  for (const c of root.querySelectorAll('canvas')) {
    const ch = window.Chart.getChart(c);
    if (ch) ch.destroy();
  }
}

// Horizontal bars, one per layer: many layers stay readable on a phone.
export function layerBarConfig(labels, datasets, xTitle) {
  return {
    type: 'bar',
    data: { labels, datasets },
    options: {
      indexAxis: 'y',
      plugins: {
        legend: { display: datasets.length > 1, position: 'bottom' },
        tooltip: { callbacks: { title: (items) => (items.length ? labels[items[0].dataIndex] : '') } },
      },
      scales: {
        x: { title: { display: !!xTitle, text: xTitle }, beginAtZero: true },
        y: { ticks: { autoSkip: false, callback(v) { return tickLabel(this.getLabelForValue(v)); } } },
      },
    },
  };
}

// Height for n horizontal bars.
export const barsHeight = (n, per = 22) => Math.max(160, Math.min(2400, n * per + 70));

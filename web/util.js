// Small helpers shared by the pages: building DOM nodes, formatting numbers and times, showing errors.
//
//   h('a', { href: '#/jobs', class: 'x' }, 'Jobs')   → <a href="#/jobs" class="x">Jobs</a>
// Text always goes in as text nodes (never innerHTML), so nothing from the server is parsed as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string' && k !== 'list') el[k] = v;   // value, checked, hidden…
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function announce(text) {
  const a = document.getElementById('announcer');
  if (!a) return;
  a.textContent = '';
  // a fresh text node after a tick makes screen readers speak it even when it repeats
  setTimeout(() => { a.textContent = text; }, 50);
}

// An error box (role="alert") with the API's message, and the field and hint when it gave them.
export function errorBox(err, prefix) {
  const msg = err && err.message ? err.message : String(err);
  return h('div', { class: 'alert', role: 'alert' },
    h('strong', {}, prefix ? `${prefix}: ` : 'Error: '), msg,
    err && err.field ? h('span', { class: 'field' }, ` (field ${err.field})`) : null,
    err && err.hint ? h('div', { class: 'hint' }, err.hint) : null);
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  n = Number(n);
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(Number(s))) return '—';
  s = Number(s);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function parseTime(t) {
  if (!t) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

export function fmtAge(t, now = Date.now()) {
  const ms = parseTime(t);
  if (ms === null) return '—';
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400 * 2) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtTime(t) {
  const ms = parseTime(t);
  return ms === null ? '—' : new Date(ms).toLocaleString();
}

export function fmtPct(x, digits = 2) {
  return typeof x === 'number' && Number.isFinite(x) ? `${(100 * x).toFixed(digits)} %` : '—';
}

export function fmtNum(x, digits = 2) {
  if (x === null || x === undefined) return '—';
  if (typeof x !== 'number') return String(x);
  if (!Number.isFinite(x)) return x > 0 ? '∞' : x < 0 ? '−∞' : '—';
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e6)) return x.toExponential(digits);
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

// A shape as the API writes it (the OpenAPI Shape schema): integers, a symbolic dim's name, null
// for a dim with neither value nor name ("?"); null as a whole when even the rank is unknown.
export function fmtShape(shape) {
  return Array.isArray(shape) ? `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]` : 'unknown';
}

// A job's run time: finished − started, or so far for a running job.
export function jobDuration(job, now = Date.now()) {
  if (typeof job.duration_s === 'number') return job.duration_s;
  const st = parseTime(job.started);
  if (st === null) return null;
  const fin = parseTime(job.finished);
  return ((fin === null ? now : fin) - st) / 1000;
}

export function stateBadge(state) {
  return h('span', { class: `badge state-${state || 'unknown'}` }, state || 'unknown');
}

// A progress bar for {stage, done, total}: a <progress> with a text label beside it.
export function progressBar(p, label) {
  const frac = p && p.total > 0 ? Math.min(1, p.done / p.total) : null;
  const bar = h('progress', { max: 1, 'aria-label': label || 'Progress' });
  if (frac !== null) bar.value = frac;
  return bar;
}

export function progressText(p) {
  if (!p) return '';
  const pct = p.total > 0 ? ` ${Math.floor((100 * p.done) / p.total)} %` : '';
  return `${p.stage || ''}${pct}`;
}

export function fmtEta(s) {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '';
  if (s < 1) return 'less than a second left';
  return `about ${fmtDuration(s)} left`;
}

// Id shortener for narrow screens (the full id stays in the title).
export function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 12)}…` : id || '';
}

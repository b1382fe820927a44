// Jobs: the newest jobs (a page of the list, longer on request) with their type, model, state,
// progress, age and duration; filter by state; cancel a live job, delete a finished one.
//
// Live updates: the running and queued jobs on screen are followed through their event streams
// (at most MAX_STREAMS at once: a browser keeps about six connections per server, and the rest
// of the page needs some), and the list is re-read every few seconds for new jobs and for live
// jobs beyond that limit. Rows are updated in place, so focus and scroll stay where they are.

import * as api from '../api.js';
import {
  h, clear, errorBox, announce, fmtAge, fmtDuration, fmtTime, jobDuration, stateBadge, progressBar,
  progressText, shortId,
} from '../util.js';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const MAX_STREAMS = 3;
const REFRESH_MS = 4000;
const PAGE = 50;

export async function render(main, { query }) {
  const filter = STATES.includes(query.get('state')) ? query.get('state') : '';
  const select = h('select', { id: 'state-filter', name: 'state' },
    h('option', { value: '' }, 'All states'),
    STATES.map((s) => h('option', { value: s, selected: s === filter }, s)));
  select.addEventListener('change', () => {
    location.hash = select.value ? `#/jobs?state=${select.value}` : '#/jobs';
  });
  const status = h('p', { class: 'hint', id: 'jobs-status' });
  const errors = h('div', { class: 'errors' });
  const tbody = h('tbody');
  const table = h('table', { class: 'jobs stack' },
    h('caption', { class: 'sr-only' }, `Jobs${filter ? ` in state ${filter}` : ''}, newest first`),
    h('thead', {}, h('tr', {},
      ['Job', 'Type', 'Model', 'State', 'Progress', 'Age', 'Duration', 'Actions']
        .map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  // a page of the list (GET /v1/jobs?limit=): "Show older jobs" asks for a longer one
  let limit = PAGE;
  const more = h('button', { type: 'button', id: 'jobs-more', hidden: true, onclick: () => { limit += PAGE; refresh(); } },
    'Show older jobs');
  const empty = h('p', { class: 'empty', hidden: true },
    filter ? `No ${filter} jobs.` : 'No jobs yet. ', filter ? null : h('a', { href: '#/new' }, 'Submit one.'));

  clear(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Jobs'),
      h('a', { class: 'button primary', href: '#/new' }, 'New job')),
    h('div', { class: 'toolbar' },
      h('label', { for: 'state-filter' }, 'State'), select, status),
    errors,
    h('div', { class: 'table-wrap' }, table),
    more,
    empty);

  const rows = new Map();     // job id → {tr, job, cells}
  const streams = new Map();  // job id → follow handle
  let models = new Map();     // model id → name
  let stopped = false;

  async function loadModels() {
    try {
      const list = await api.get('/v1/models');
      models = new Map((list.models || list || []).map((m) => [m.id, m.name]));
    } catch { /* names are a nicety: ids still show */ }
  }

  function modelName(job) {
    const id = job.spec && job.spec.model;
    if (!id) return '—';
    return models.get(id) || id;
  }

  function makeRow(job) {
    const cells = {
      id: h('td', { 'data-label': 'Job' }),
      type: h('td', { 'data-label': 'Type' }),
      model: h('td', { 'data-label': 'Model' }),
      state: h('td', { 'data-label': 'State' }),
      progress: h('td', { 'data-label': 'Progress', class: 'progress-cell' }),
      age: h('td', { 'data-label': 'Age' }),
      duration: h('td', { 'data-label': 'Duration' }),
      actions: h('td', { 'data-label': 'Actions', class: 'row-actions' }),
    };
    const tr = h('tr', { 'data-job': job.id }, Object.values(cells));
    const row = { tr, job, cells, key: '' };
    fill(row, job);
    return row;
  }

  function fill(row, job) {
    row.job = job;
    const c = row.cells;
    const live = !api.isTerminal(job.state);
    // rebuild only what changed, so a focused Cancel button is not replaced under the user
    const key = `${job.state}|${modelName(job)}`;
    if (key !== row.key) {
      row.key = key;
      clear(c.id, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}`, title: job.id },
        job.spec && job.spec.name ? job.spec.name : shortId(job.id)));
      clear(c.type, job.type);
      clear(c.model, modelName(job));
      clear(c.state, stateBadge(job.state));
      clear(c.actions, live
        ? h('button', { type: 'button', class: 'danger small', 'aria-label': `Cancel job ${job.id}`, onclick: () => cancel(job.id) }, 'Cancel')
        : h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete job ${job.id}`, onclick: () => remove(job.id) }, 'Delete'));
    }
    const p = job.progress;
    // one wrapper, so that the stacked (narrow) layout keeps bar and text in one grid cell
    if (job.state === 'running' || job.state === 'queued') {
      clear(c.progress, h('div', {}, progressBar(job.state === 'running' ? p : null, `Progress of job ${job.id}`),
        h('span', { class: 'progress-text' }, job.state === 'running' ? progressText(p) : 'waiting')));
    } else if (job.state === 'succeeded') {
      clear(c.progress, h('div', {}, progressBar({ done: 1, total: 1 }, `Progress of job ${job.id}`), h('span', { class: 'progress-text' }, 'done')));
    } else {
      clear(c.progress, h('div', {}, h('span', { class: 'progress-text' }, job.state === 'failed' && job.error ? job.error.message : '—')));
    }
    c.age.textContent = fmtAge(job.created);
    c.age.title = fmtTime(job.created);
    c.duration.textContent = fmtDuration(jobDuration(job));
  }

  async function cancel(id) {
    if (!window.confirm(`Cancel job ${id}?`)) return;
    try {
      const job = await api.del(`/v1/jobs/${encodeURIComponent(id)}`);
      if (job) update(job);
      announce(`Job ${id}: cancel ${job && job.cancel_requested ? 'requested' : 'done'}`);
    } catch (err) {
      clear(errors, errorBox(err, `Cancelling ${id}`));
    }
  }

  // a finished job: DELETE removes it with its events and artifacts
  async function remove(id) {
    if (!window.confirm(`Delete job ${id} with its events and artifacts?`)) return;
    try {
      await api.del(`/v1/jobs/${encodeURIComponent(id)}`);
      const row = rows.get(id);
      if (row) {
        row.tr.remove();
        rows.delete(id);
      }
      stopStream(id);
      empty.hidden = rows.size > 0;
      announce(`Job ${id} deleted`);
    } catch (err) {
      clear(errors, errorBox(err, `Deleting ${id}`));
    }
  }

  function update(job) {
    const row = rows.get(job.id);
    if (!row) return;
    const before = row.job.state;
    fill(row, job);
    if (before !== job.state && api.isTerminal(job.state)) announce(`Job ${job.id} ${job.state}`);
    if (api.isTerminal(job.state)) stopStream(job.id);
  }

  function stopStream(id) {
    const s = streams.get(id);
    if (s) {
      s.close();
      streams.delete(id);
    }
  }

  // Follows a live job: progress and state land in its row as they happen.
  function startStream(job) {
    const id = job.id;
    const s = api.follow(id, {
      event(ev) {
        const row = rows.get(id);
        if (!row) return;
        const j = { ...row.job };
        if (ev.type === 'progress') {
          j.progress = ev.data;
          if (j.state === 'queued') j.state = 'running';
        } else if (ev.type === 'state') {
          j.state = ev.data.state;
          if (ev.data.state === 'running' && !j.started) j.started = ev.data.ts;
          if (api.isTerminal(ev.data.state)) j.finished = ev.data.ts;
        } else {
          return;
        }
        fill(row, j);
      },
      async end() {
        streams.delete(id);
        try {   // the final record: duration, error
          update(await api.get(`/v1/jobs/${encodeURIComponent(id)}`));
        } catch { /* the next refresh will do */ }
      },
      error(err, fatal) {
        if (fatal) streams.delete(id);
      },
    });
    streams.set(id, s);
  }

  async function refresh() {
    let list;
    try {
      list = await api.get(`/v1/jobs?limit=${limit}${filter ? `&state=${filter}` : ''}`);
    } catch (err) {
      clear(errors, errorBox(err, 'Loading the jobs'));
      return;
    }
    if (stopped) return;
    clear(errors);
    const jobs = list.jobs || [];
    if (jobs.some((j) => j.spec && j.spec.model && !models.has(j.spec.model))) await loadModels();
    const ids = new Set(jobs.map((j) => j.id));
    for (const [id, row] of rows) {
      if (!ids.has(id)) {
        row.tr.remove();
        rows.delete(id);
        stopStream(id);
      }
    }
    // newest first, as the server lists them
    let prev = null;
    for (const job of jobs) {
      let row = rows.get(job.id);
      if (!row) {
        row = makeRow(job);
        rows.set(job.id, row);
      } else if (!streams.has(job.id)) {
        update(job);
      }
      if (prev ? prev.nextSibling !== row.tr : tbody.firstChild !== row.tr) {
        if (prev) prev.after(row.tr);
        else tbody.prepend(row.tr);
      }
      prev = row.tr;
    }
    for (const job of jobs) {
      if (!api.isTerminal(job.state) && !streams.has(job.id) && streams.size < MAX_STREAMS) startStream(job);
    }
    empty.hidden = jobs.length > 0;
    table.hidden = jobs.length === 0;
    status.textContent = `${jobs.length} job${jobs.length === 1 ? '' : 's'}${list.next ? ' (the newest)' : ''}`;
    more.hidden = !list.next;
  }

  await loadModels();
  await refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  // ages and running durations move on their own
  const tick = setInterval(() => {
    for (const row of rows.values()) {
      row.cells.age.textContent = fmtAge(row.job.created);
      if (row.job.state === 'running') row.cells.duration.textContent = fmtDuration(jobDuration(row.job));
    }
  }, 1000);
  return () => {
    stopped = true;
    clearInterval(timer);
    clearInterval(tick);
    for (const s of streams.values()) s.close();
    streams.clear();
  };
}

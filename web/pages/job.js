// One job: its stages with progress and ETA, the log, FP32 vs quantized accuracy, per-layer SQNR or
// sensitivity, per-channel weight ranges before/after CLE, QAT curves, artifacts, the spec.
//
// The page follows the job's event stream from the start (the server replays the log), so the
// same code draws a job that is running and one that ended long ago. When the terminal state
// arrives, the final record is read again (result, artifacts) and the reports behind the charts
// are fetched: report.json (ptq, qat) and analysis.json (analyze). The reports' keys differ by
// job type and grow over time, so every section checks for what it needs and is left out when it
// is absent.

import * as api from '../api.js';
import {
  h, clear, errorBox, announce, fmtBytes, fmtDuration, fmtTime, fmtPct, fmtNum, fmtEta, jobDuration,
  stateBadge, progressBar, shortId, parseTime,
} from '../util.js';
import { chartBlock, layerBarConfig, barsHeight, palette } from '../charts.js';

const MAX_LOG = 3000;
const MAX_STAGES = 10;

export async function render(main, { id }) {
  const enc = encodeURIComponent(id);
  let job;
  try {
    job = await api.get(`/v1/jobs/${enc}`);
  } catch (err) {
    clear(main, h('h1', {}, `Job ${id}`), errorBox(err, 'Loading the job'),
      h('p', {}, h('a', { href: '#/jobs' }, 'Back to the jobs')));
    return null;
  }

  // --- skeleton -----------------------------------------------------------------------------
  const badge = h('span', { id: 'job-state' }, stateBadge(job.state));
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel-job', onclick: cancel }, 'Cancel job');
  // a finished job can be deleted with its events and artifacts (DELETE on a finished job)
  const deleteBtn = h('button', { type: 'button', class: 'danger', id: 'delete-job', onclick: remove, hidden: true }, 'Delete job');
  const meta = h('dl', { class: 'meta' });
  const errors = h('div', { class: 'errors' });
  const progressLive = h('p', { class: 'progress-line', id: 'job-progress-text', 'aria-live': 'polite' });
  const bar = h('progress', { max: 1, id: 'job-progress', 'aria-label': 'Progress of the current stage' });
  const eta = h('span', { class: 'eta', id: 'job-eta' });
  const stagesList = h('ol', { class: 'stages', id: 'job-stages', 'aria-label': 'Stages' });
  const failure = h('div', { id: 'job-error' });
  const results = h('div', { id: 'job-results' });
  const liveMetrics = h('dl', { class: 'meta metrics', id: 'job-metrics' });
  const logList = h('ol', { class: 'log', id: 'job-log' });
  const logBox = h('div', { class: 'log-box', tabindex: 0, role: 'region', 'aria-label': 'Job log' }, logList);
  const artifactsBox = h('div', { id: 'job-artifacts' });
  const qatLive = h('div', { id: 'qat-live' });

  clear(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', shortId(id)),
    h('div', { class: 'page-head' },
      h('h1', {}, job.spec && job.spec.name ? job.spec.name : `Job ${id}`), badge, cancelBtn, deleteBtn),
    errors,
    h('section', { class: 'panel', 'aria-labelledby': 'h-overview' },
      h('h2', { id: 'h-overview' }, 'Overview'), meta),
    failure,
    h('section', { class: 'panel', 'aria-labelledby': 'h-progress' },
      h('h2', { id: 'h-progress' }, 'Progress'),
      h('div', { class: 'progress-row' }, bar, eta),
      progressLive,
      stagesList,
      liveMetrics,
      qatLive),
    results,
    h('section', { class: 'panel', 'aria-labelledby': 'h-artifacts' },
      h('h2', { id: 'h-artifacts' }, 'Artifacts'), artifactsBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-log' },
      h('h2', { id: 'h-log' }, 'Log'), logBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-spec' },
      h('h2', { id: 'h-spec' }, 'Job spec'),
      h('pre', { class: 'json', id: 'job-spec', tabindex: 0 }, JSON.stringify(job.spec, null, 2))));

  // --- state kept from the events -------------------------------------------------------------
  const stages = new Map();   // stage → {done, total, eta_s}
  let current = null;         // the stage being worked on
  const metrics = new Map();
  const curve = { loss: [], acc: [] };   // live QAT metrics, in arrival order
  let qatChart = null;
  let finished = false;
  let gone = false;   // the user left: work still in flight must not draw into the old page
  let models = null;
  // Events replayed from before the page opened are drawn but not announced.
  const openedAt = Date.now();
  const fresh = (d) => (parseTime(d.ts) ?? 0) >= openedAt - 2000;

  function renderMeta() {
    const model = job.spec && job.spec.model;
    const rows = [
      ['Id', h('code', {}, job.id)],
      ['Type', job.type],
      ['Model', model ? (models && models.get(model) ? `${models.get(model)} (${model})` : model) : '—'],
      ['Created', fmtTime(job.created)],
      ['Started', fmtTime(job.started)],
      ['Finished', fmtTime(job.finished)],
      ['Duration', fmtDuration(jobDuration(job))],
    ];
    if (job.attempts > 1) rows.push(['Attempts', String(job.attempts)]);
    clear(meta, rows.map(([k, v]) => [h('dt', {}, k), h('dd', { id: k === 'Duration' ? 'job-duration' : null }, v)]));
    clear(badge, stateBadge(job.state));
    cancelBtn.hidden = api.isTerminal(job.state);
    deleteBtn.hidden = !api.isTerminal(job.state);
    if (job.state === 'failed' && job.error) {
      clear(failure, h('section', { class: 'panel', 'aria-labelledby': 'h-failed' },
        h('h2', { id: 'h-failed' }, 'Why it failed'),
        errorBox({ message: job.error.message, hint: job.error.code ? `code: ${job.error.code}` : '' }, 'The job failed')));
    } else {
      clear(failure);
    }
  }

  function renderProgress() {
    const p = current ? stages.get(current) : null;
    if (job.state === 'succeeded') {
      bar.value = 1;
      eta.textContent = '';
    } else if (p && p.total > 0) {
      bar.value = Math.min(1, p.done / p.total);
      eta.textContent = api.isTerminal(job.state) ? '' : fmtEta(p.eta_s);
    } else {
      bar.removeAttribute('value');   // indeterminate while queued
      eta.textContent = '';
    }
    const pieces = [];
    if (job.state === 'queued') pieces.push('Waiting for a worker.');
    else if (job.state === 'running') pieces.push(current ? `Stage: ${current}.` : 'Starting.');
    else pieces.push(job.state === 'cancelled' ? 'The job was cancelled.' : `The job ${job.state}.`);
    const line = pieces.join(' ');
    if (progressLive.textContent !== line) progressLive.textContent = line;   // live region: speak changes only
    // a long QAT run has two stages per epoch: show the latest few, count the rest
    const all = [...stages.entries()];
    const shown = all.slice(-MAX_STAGES);
    clear(stagesList, all.length > shown.length
      ? h('li', { class: 'done earlier' }, `${all.length - shown.length} earlier stages`) : null, shown.map(([name, s]) => {
      const done = name !== current || job.state === 'succeeded' || (s.total > 0 && s.done >= s.total);
      return h('li', { class: done ? 'done' : 'active' },
        h('span', { class: 'stage-name' }, name),
        h('span', { class: 'stage-count' }, s.total > 0 ? `${fmtNum(s.done, 0)} / ${fmtNum(s.total, 0)}` : ''),
        h('span', { class: 'sr-only' }, done ? ' (done)' : ' (in progress)'));
    }));
  }

  function renderMetrics() {
    clear(liveMetrics, [...metrics.entries()].map(([k, v]) => [h('dt', {}, k.replace(/_/g, ' ')),
      h('dd', {}, /accuracy/.test(k) ? fmtPct(v) : fmtNum(v, 4))]));
  }

  function addLog(ev) {
    const d = ev.data || {};
    let text;
    let level = 'info';
    if (ev.type === 'log') {
      text = d.message;
      level = d.level || 'info';
    } else if (ev.type === 'state') {
      text = `state: ${d.state}${d.reason ? ` (${d.reason})` : ''}`;
      level = 'state';
    } else {
      return;
    }
    const t = parseTime(d.ts);
    logList.append(h('li', { class: `level-${level}` },
      h('time', { datetime: d.ts || '' }, t ? new Date(t).toLocaleTimeString() : ''),
      h('span', { class: 'level' }, level), h('span', { class: 'msg' }, text)));
    while (logList.childElementCount > MAX_LOG) logList.firstElementChild.remove();
    if (logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 80) logBox.scrollTop = logBox.scrollHeight;
  }

  function onEvent(ev) {
    const d = ev.data || {};
    switch (ev.type) {
      case 'state': {
        if (finished) {   // the final record is on screen already: this is the replayed history
          addLog(ev);
          break;
        }
        const before = job.state;
        job.state = d.state;
        if (d.state === 'running') job.started = d.ts;
        if (d.state === 'queued') current = null;
        if (api.isTerminal(d.state)) job.finished = d.ts;
        if (before !== d.state && fresh(d)) announce(`Job ${d.state}`);
        renderMeta();
        renderProgress();
        addLog(ev);
        break;
      }
      case 'progress':
        if (!d.stage) break;
        stages.set(d.stage, { done: d.done, total: d.total, eta_s: d.eta_s });
        if (current !== d.stage) {
          current = d.stage;
          if (fresh(d)) announce(`Stage: ${d.stage}`);
        }
        if (job.state === 'queued' && !finished) job.state = 'running';
        renderProgress();
        break;
      case 'log':
        addLog(ev);
        break;
      case 'metric':
        metrics.set(d.name, d.value);
        if (d.name === 'train_loss') curve.loss.push(d.value);
        if (d.name === 'val_accuracy') curve.acc.push(d.value);
        renderMetrics();
        if (curve.loss.length && !finished) drawLiveCurve();
        break;
      default:
        break;
    }
  }

  function drawLiveCurve() {
    const epochs = Math.max(curve.loss.length, curve.acc.length);
    const c = { epochs: Array.from({ length: epochs }, (_, i) => i + 1), loss: curve.loss, acc: curve.acc };
    if (!qatChart) {
      qatChart = curveChart(c, 'Training so far (per epoch)');
      clear(qatLive, qatChart.el);
      qatChart.draw(curveConfig(c));
    } else if (qatChart.chart) {
      const cfg = curveConfig(c);
      qatChart.chart.data = cfg.data;
      qatChart.chart.update();
    }
  }

  async function finish() {
    if (finished) return;
    finished = true;
    try {
      job = await api.get(`/v1/jobs/${enc}`);
    } catch (err) {
      clear(errors, errorBox(err, 'Reloading the job'));
    }
    if (gone) return;
    renderMeta();
    renderProgress();
    renderArtifacts();
    clear(qatLive);
    qatChart = null;
    await renderResults();
  }

  async function cancel() {
    if (!window.confirm(`Cancel job ${id}?`)) return;
    try {
      const j = await api.del(`/v1/jobs/${enc}`);
      announce(j && j.cancel_requested ? 'Cancel requested: the job stops at its next check.' : 'Job cancelled.');
    } catch (err) {
      clear(errors, errorBox(err, 'Cancelling'));
    }
  }

  async function remove() {
    if (!window.confirm(`Delete job ${id} with its events and artifacts? This cannot be undone.`)) return;
    try {
      await api.del(`/v1/jobs/${enc}`);
      announce(`Job ${id} deleted.`);
      window.location.hash = '#/jobs';
    } catch (err) {
      clear(errors, errorBox(err, 'Deleting the job'));
    }
  }

  // The list comes from GET /v1/jobs/{id}/artifacts (sizes, hashes and content types); the job
  // record's own list stands in until it answers.
  async function renderArtifacts() {
    let arts = job.artifacts || [];
    if (api.isTerminal(job.state) && arts.length) {
      try {
        arts = (await api.get(`/v1/jobs/${enc}/artifacts`)).artifacts || arts;
      } catch (err) {
        clear(errors, errorBox(err, 'Listing the artifacts'));
      }
      if (gone) return;
    }
    if (!arts.length) {
      clear(artifactsBox, h('p', { class: 'hint' },
        api.isTerminal(job.state) ? 'This job left no artifacts.' : 'Artifacts appear here when the job succeeds.'));
      return;
    }
    const total = arts.reduce((n, a) => n + (a.size || 0), 0);
    clear(artifactsBox, h('div', { class: 'table-wrap' }, h('table', { class: 'artifacts stack' },
      h('caption', { class: 'sr-only' }, 'Artifacts'),
      h('thead', {}, h('tr', {}, ['Name', 'Size', 'Type', 'SHA-256', 'Download'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, arts.map((a) => h('tr', { 'data-artifact': a.name },
        h('th', { scope: 'row', 'data-label': 'Name' }, a.name),
        h('td', { 'data-label': 'Size', class: 'num', title: `${a.size} bytes` }, fmtBytes(a.size)),
        h('td', { 'data-label': 'Type' }, a.content_type ? a.content_type.split(';')[0] : '—'),
        h('td', { 'data-label': 'SHA-256' }, h('code', { title: a.sha256 }, (a.sha256 || '').slice(0, 16))),
        h('td', { 'data-label': 'Download' }, downloadLink(a))))),
      h('tfoot', {}, h('tr', {}, h('th', { scope: 'row' }, `${arts.length} file${arts.length === 1 ? '' : 's'}`),
        h('td', { 'data-label': 'Total', class: 'num', id: 'artifacts-total', title: `${total} bytes` }, fmtBytes(total)), h('td', { colspan: 3 }))))));
  }

  function downloadLink(a) {
    const link = h('a', { href: a.url, download: a.name, class: 'download', 'aria-label': `Download ${a.name} (${fmtBytes(a.size)})` }, 'Download');
    link.addEventListener('click', async (e) => {
      if (!api.token()) return;   // no token: the browser downloads the link itself
      e.preventDefault();
      try {
        await api.download(a.url, a.name);
      } catch (err) {
        clear(errors, errorBox(err, `Downloading ${a.name}`));
      }
    });
    return link;
  }

  async function fetchArtifact(name) {
    const a = (job.artifacts || []).find((x) => x.name === name);
    if (!a) return null;
    try {
      return await api.get(a.url);
    } catch (err) {
      results.append(errorBox(err, `Reading ${name}`));
      return null;
    }
  }

  async function renderResults() {
    clear(results);
    if (job.state !== 'succeeded') return;
    const [report, analysis] = await Promise.all([fetchArtifact('report.json'), fetchArtifact('analysis.json')]);
    if (gone) return;
    const result = job.result || (report && report.result) || {};
    const sections = [
      accuracySection(result, analysis),
      layerSection(report, analysis),
      cleSection(report, analysis),
      qatSection(report),
      quantizerSection(report),
      notesSection(report, analysis),
    ].filter(Boolean);
    for (const s of sections) {
      results.append(s.el);
      if (s.after) s.after();
    }
  }

  // --- start -----------------------------------------------------------------------------------
  renderMeta();
  renderProgress();
  renderArtifacts();
  api.get('/v1/models').then((l) => {
    models = new Map((l.models || []).map((m) => [m.id, m.name]));
    if (!gone) renderMeta();
  }).catch(() => {});
  if (api.isTerminal(job.state)) finish();
  let stream = api.follow(id, {
    event: onEvent,
    end: () => { stream = null; finish(); },
    error(err, fatal) {
      clear(errors, errorBox(err, fatal ? 'Following the job' : 'Event stream interrupted; reconnecting'));
    },
  });
  const tick = setInterval(() => {
    const dd = document.getElementById('job-duration');
    if (job.state === 'running' && dd) dd.textContent = fmtDuration(jobDuration(job));
  }, 1000);
  // A job that had ended when the page opened is finished at once; its stream only replays
  // the log. A live one finishes when its stream delivers the terminal state and ends.
  return () => {
    gone = true;
    clearInterval(tick);
    if (stream) stream.close();
  };
}

// --- result sections (each returns {el, after?} or null) ----------------------------------------

function section(id, title, ...children) {
  return h('section', { class: 'panel', id, 'aria-labelledby': `h-${id}` }, h('h2', { id: `h-${id}` }, title), ...children);
}

const ACCURACY_KEYS = [
  ['fp32_accuracy', 'FP32'],
  ['quant_accuracy', 'Quantized'],
  ['ptq_accuracy', 'PTQ (before training)'],
  ['qat_accuracy', 'QAT'],
  ['weights_only_accuracy', 'Weights only quantized'],
  ['activations_only_accuracy', 'Activations only quantized'],
  ['accuracy', 'Accuracy'],
];

function accuracySection(result, analysis) {
  const rows = ACCURACY_KEYS.filter(([k]) => typeof result[k] === 'number').map(([k, label]) => [k, label, result[k]]);
  if (!rows.length && analysis && analysis.fp32) {
    const a = analysis;
    const add = (label, o) => { if (o && typeof o.accuracy === 'number') rows.push([label, label, o.accuracy]); };
    if (typeof a.fp32.accuracy === 'number') rows.push(['fp32_accuracy', 'FP32', a.fp32.accuracy]);
    add('Quantized', a.quantized);
    add('Weights only quantized', a.weights_only);
    add('Activations only quantized', a.activations_only);
  }
  if (!rows.length) return null;
  const fp32 = typeof result.fp32_accuracy === 'number' ? result.fp32_accuracy : null;
  const samples = result.validation_samples;
  const table = h('table', { class: 'accuracy' },
    h('caption', { class: 'sr-only' }, 'Top-1 accuracy on the validation data'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Model'), h('th', { scope: 'col', class: 'num' }, 'Top-1'),
      h('th', { scope: 'col', class: 'num' }, 'vs FP32'), h('td', { 'aria-hidden': 'true' }))),
    h('tbody', {}, rows.map(([k, label, v]) => {
      const delta = fp32 !== null && k !== 'fp32_accuracy' ? 100 * (v - fp32) : null;
      const fill = h('span', { class: `fill ${k === 'fp32_accuracy' ? 'ref' : ''}` });
      fill.style.width = `${Math.max(0, Math.min(100, 100 * v))}%`;
      return h('tr', { 'data-key': k },
        h('th', { scope: 'row' }, label),
        h('td', { class: 'num' }, fmtPct(v)),
        h('td', { class: `num ${delta !== null && delta < -0.5 ? 'bad' : ''}` },
          delta === null ? '—' : h('span', { title: 'percentage points' }, `${delta >= 0 ? '+' : '−'}${Math.abs(delta).toFixed(2)} pt`)),
        h('td', { class: 'bar-cell', 'aria-hidden': 'true' }, h('span', { class: 'hbar' }, fill)));
    })));
  return {
    el: section('accuracy', 'Accuracy: FP32 vs quantized',
      samples ? h('p', { class: 'hint' }, `On ${samples} validation samples.`) : null,
      h('div', { class: 'table-wrap' }, table)),
  };
}

function layerSection(report, analysis) {
  const p = palette();
  if (analysis && Array.isArray(analysis.layers) && analysis.layers.length) {
    const L = analysis.layers;
    const names = L.map((l) => l.name);
    const sq = chartBlock({
      title: 'Sensitivity: output SQNR with only this layer quantized (dB, lower = more sensitive)',
      height: barsHeight(L.length),
      table: {
        head: ['Layer', 'Op', 'Rank', 'SQNR only this (dB)', 'Drop only this (points)', 'Recovery all but this (points)'],
        rows: L.map((l) => [l.name, l.op || '', l.rank ?? '', fmtNum(l.sqnr_only_this_db), fmtNum(l.drop_only_this_points),
          fmtNum(l.recovery_all_but_this_points)]),
      },
    });
    const drop = chartBlock({
      title: 'Sensitivity: accuracy drop with only this layer quantized (points)',
      height: barsHeight(L.length),
    });
    const ranking = Array.isArray(analysis.ranking) && analysis.ranking.length
      ? h('p', {}, 'Most sensitive first: ', analysis.ranking.slice(0, 5).map((r) => r.name).join(', '), '.') : null;
    return {
      el: section('layers', 'Per-layer sensitivity', ranking, sq.el, drop.el),
      after() {
        sq.draw(layerBarConfig(names, [{ label: 'SQNR only this (dB)', data: L.map((l) => l.sqnr_only_this_db ?? null), backgroundColor: p.a }], 'dB'));
        drop.draw(layerBarConfig(names, [{ label: 'accuracy drop (points)', data: L.map((l) => l.drop_only_this_points ?? null), backgroundColor: p.b }], 'points'));
      },
    };
  }
  if (report && Array.isArray(report.layers) && report.layers.length) {
    const L = report.layers;
    const names = L.map((l) => l.layer || l.name);
    const exact = L.filter((l) => l.sqnr_db === null || l.sqnr_db === undefined).length;
    const block = chartBlock({
      title: 'Per-layer SQNR of the quantized model (dB, higher = closer to FP32)',
      label: 'Bar chart of each layer\'s output SQNR in dB',
      height: barsHeight(L.length),
      note: exact ? `${exact} layer(s) have no error at all (infinite SQNR) and no bar.` : null,
      table: { head: ['Layer', 'Output', 'SQNR (dB)'], rows: L.map((l) => [l.layer || l.name, l.name || '', fmtNum(l.sqnr_db)]) },
    });
    return {
      el: section('layers', 'Per-layer SQNR', block.el),
      after() {
        block.draw(layerBarConfig(names, [{ label: 'SQNR (dB)', data: L.map((l) => (typeof l.sqnr_db === 'number' ? l.sqnr_db : null)), backgroundColor: p.a }], 'dB'));
      },
    };
  }
  return null;
}

// Per output channel of one layer: [min, max] of its weights as floating bars, before and after CLE.
function cleSection(report, analysis) {
  const layers = (report && report.cle && Array.isArray(report.cle.layers) && report.cle.layers)
    || (analysis && analysis.weight_ranges && Array.isArray(analysis.weight_ranges.layers) && analysis.weight_ranges.layers)
    || null;
  const usable = (layers || []).filter((l) => l && l.before && l.after && Array.isArray(l.before.min) && l.before.min.length);
  if (!usable.length) return null;
  const p = palette();
  const select = h('select', { id: 'cle-layer' },
    usable.map((l, i) => h('option', { value: String(i) }, `${l.name}${l.op ? ` (${l.op}` : ''}${l.channels ? `, ${l.channels} channels` : ''}${l.depthwise ? ', depthwise' : ''}${l.op ? ')' : ''}`)));
  const block = chartBlock({
    title: 'Per-channel weight ranges before and after cross-layer equalization',
    label: 'Floating bar chart: for each output channel, the weight range before and after CLE',
    height: 300,
  });
  const tableHolder = h('div');
  const summary = h('p', { class: 'hint', 'aria-live': 'polite' });
  function config(l) {
    const n = l.before.min.length;
    const labels = Array.from({ length: n }, (_, i) => String(i));
    const pairs = (r) => r.min.map((mn, i) => [mn, r.max[i]]);
    return {
      type: 'bar',
      data: {
        labels,
        datasets: [
          { label: 'before CLE', data: pairs(l.before), backgroundColor: p.muted },
          { label: 'after CLE', data: pairs(l.after), backgroundColor: p.a },
        ],
      },
      options: {
        plugins: { legend: { position: 'bottom' } },
        scales: {
          x: { title: { display: true, text: 'output channel' }, ticks: { maxRotation: 0, autoSkipPadding: 6 } },
          y: { title: { display: true, text: 'weight value' } },
        },
      },
    };
  }
  function spread(r) {
    const w = r.min.map((mn, i) => r.max[i] - mn);
    return { lo: Math.min(...w), hi: Math.max(...w) };
  }
  function show() {
    const l = usable[Number(select.value) || 0];
    block.draw(config(l));
    const b = spread(l.before);
    const a = spread(l.after);
    summary.textContent = `Channel range widths: before ${fmtNum(b.lo, 3)} to ${fmtNum(b.hi, 3)}, after ${fmtNum(a.lo, 3)} to ${fmtNum(a.hi, 3)}.`;
    clear(tableHolder, h('details', { class: 'data-table' }, h('summary', {}, 'Data table'),
      h('div', { class: 'table-wrap' }, h('table', {},
        h('caption', { class: 'sr-only' }, `Weight ranges of ${l.name}`),
        h('thead', {}, h('tr', {}, ['Channel', 'Min before', 'Max before', 'Min after', 'Max after'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, l.before.min.map((_, i) => h('tr', {}, h('th', { scope: 'row' }, String(i)),
          [l.before.min[i], l.before.max[i], l.after.min[i], l.after.max[i]].map((v) => h('td', { class: 'num' }, fmtNum(v, 4))))))))));
  }
  select.addEventListener('change', show);
  const applied = report && report.cle ? report.cle : analysis && analysis.weight_ranges;
  const note = applied && applied.cle_applied === false ? h('p', { class: 'hint' }, 'CLE was off for this job: before and after are the same.')
    : applied && applied.kept === false ? h('p', { class: 'hint' }, 'CLE was reverted by the step check (it lowered the held-out score): "after" is what it would have done.') : null;
  return {
    el: section('cle', 'Weight ranges and CLE', note,
      h('div', { class: 'toolbar' }, h('label', { for: 'cle-layer' }, 'Layer'), select),
      block.el, summary, tableHolder),
    after: show,
  };
}

function curveConfig(c) {
  const p = palette();
  return {
    type: 'line',
    data: {
      labels: c.epochs.map(String),
      datasets: [
        { label: 'training loss', data: c.loss, borderColor: p.b, backgroundColor: p.b, yAxisID: 'y', tension: 0.2 },
        { label: 'validation accuracy (%)', data: c.acc.map((v) => (typeof v === 'number' ? 100 * v : null)), borderColor: p.a, backgroundColor: p.a, yAxisID: 'y1', tension: 0.2 },
      ],
    },
    options: {
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { position: 'bottom' } },
      scales: {
        x: { title: { display: true, text: 'epoch' } },
        y: { position: 'left', title: { display: true, text: 'loss' } },
        y1: { position: 'right', title: { display: true, text: 'accuracy (%)' }, grid: { drawOnChartArea: false } },
      },
    },
  };
}

function curveChart(c, title) {
  return chartBlock({
    title,
    label: 'Line chart of training loss and validation accuracy per epoch',
    height: 280,
    table: { head: ['Epoch', 'Loss', 'Validation accuracy'], rows: c.epochs.map((e, i) => [String(e), fmtNum(c.loss[i], 4), fmtPct(c.acc[i])]) },
  });
}

function qatSection(report) {
  const q = report && report.qat;
  const points = q && Array.isArray(q.curve) ? q.curve : null;
  if (!points || !points.length) return null;
  const c = {
    epochs: points.map((p, i) => p.epoch ?? i + 1),
    loss: points.map((p) => (typeof p.loss === 'number' ? p.loss : null)),
    acc: points.map((p) => (typeof p.accuracy === 'number' ? p.accuracy : null)),
  };
  const block = curveChart(c, 'QAT: training loss and validation accuracy per epoch');
  const t = q.training || {};
  const facts = [
    t.epochs !== undefined ? `${t.epochs} epoch(s)` : null,
    t.optimizer ? `${t.optimizer}, lr ${t.lr}` : null,
    t.schedule ? `${t.schedule} schedule` : null,
    t.training_samples ? `${t.training_samples} training samples` : null,
  ].filter(Boolean).join(' · ');
  return {
    el: section('qat', 'Quantization-aware training', facts ? h('p', { class: 'hint' }, facts) : null, block.el),
    after: () => block.draw(curveConfig(c)),
  };
}

function quantizerSection(report) {
  const qs = report && Array.isArray(report.quantizers) ? report.quantizers : null;
  if (!qs || !qs.length) return null;
  const range = (a) => (Array.isArray(a) && a.length ? (a.length === 1 ? fmtNum(a[0], 4) : `${fmtNum(Math.min(...a), 3)} … ${fmtNum(Math.max(...a), 3)}`) : '—');
  return {
    el: section('quantizers', `Quantizers (${qs.length})`,
      h('details', {}, h('summary', {}, 'Show every quantizer: grid, scale and range'),
        h('div', { class: 'table-wrap' }, h('table', { class: 'quantizers' },
          h('caption', { class: 'sr-only' }, 'Quantizers'),
          h('thead', {}, h('tr', {}, ['Name', 'Layer', 'Kind', 'Bits', 'Channels', 'Scale', 'Zero point', 'Min', 'Max'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, qs.map((q) => h('tr', {},
            h('th', { scope: 'row' }, q.name), h('td', {}, q.layer || ''), h('td', {}, q.kind || ''),
            h('td', { class: 'num' }, q.bits ?? ''), h('td', { class: 'num' }, Array.isArray(q.scale) ? q.scale.length : ''),
            h('td', { class: 'num' }, range(q.scale)), h('td', { class: 'num' }, range(q.zero_point)),
            h('td', { class: 'num' }, range(q.min)), h('td', { class: 'num' }, range(q.max)))))))))
  };
}

function notesSection(report, analysis) {
  const items = [];
  const add = (x) => items.push(typeof x === 'string' ? x : x && x.message ? x.message : JSON.stringify(x));
  if (analysis && Array.isArray(analysis.diagnosis)) analysis.diagnosis.forEach(add);
  if (report && Array.isArray(report.warnings)) report.warnings.forEach(add);
  if (analysis && Array.isArray(analysis.warnings)) analysis.warnings.forEach(add);
  const timings = report && report.timings && typeof report.timings === 'object' ? Object.entries(report.timings) : [];
  if (!items.length && !timings.length) return null;
  return {
    el: section('notes', analysis ? 'Diagnosis and warnings' : 'Warnings and timings',
      items.length ? h('ul', { class: 'notes' }, items.map((t) => h('li', {}, t))) : h('p', { class: 'hint' }, 'No warnings.'),
      timings.length ? h('details', {}, h('summary', {}, 'Time per stage'),
        h('dl', { class: 'meta' }, timings.map(([k, v]) => [h('dt', {}, k.replace(/_/g, ' ')), h('dd', {}, fmtDuration(v))]))) : null),
  };
}


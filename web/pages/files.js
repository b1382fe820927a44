// Models and data sets: upload (raw bytes, with a progress bar fed by XMLHttpRequest's upload
// events), list, details (a model's inputs, outputs and ops; a data set's arrays and shapes),
// delete. One module for both pages: they differ only in words and in the details they show.

import * as api from '../api.js';
import { h, clear, errorBox, announce, fmtBytes, fmtAge, fmtTime, fmtShape, shortId } from '../util.js';

const KINDS = {
  models: {
    title: 'Models',
    one: 'model',
    accept: '.onnx',
    fileLabel: 'ONNX model (.onnx)',
    help: 'The raw .onnx file. The server checks that it parses and that its operators are supported.',
  },
  datasets: {
    title: 'Data sets',
    one: 'data set',
    accept: '.npy,.npz',
    fileLabel: 'Data set (.npy or .npz)',
    help: 'numpy.save / numpy.savez output: calibration inputs, validation inputs, or labels.',
  },
};

export async function render(main, { kind }) {
  const K = KINDS[kind];
  const fileInput = h('input', { type: 'file', id: 'upload-file', name: 'file', accept: K.accept, required: true, 'aria-describedby': 'upload-help' });
  const nameInput = h('input', { type: 'text', id: 'upload-name', name: 'name', maxlength: 200, autocomplete: 'off', placeholder: 'defaults to the file name' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'upload-submit' }, `Upload ${K.one}`);
  const bar = h('progress', { id: 'upload-progress', max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const status = h('p', { id: 'upload-status', class: 'upload-status', 'aria-live': 'polite' });
  const uploadErrors = h('div', { id: 'upload-errors' });
  const form = h('form', { class: 'panel upload', id: 'upload-form', 'aria-labelledby': 'h-upload' },
    h('h2', { id: 'h-upload' }, `Upload a ${K.one}`),
    h('div', { class: 'field' }, h('label', { for: 'upload-file' }, K.fileLabel), fileInput,
      h('p', { class: 'hint', id: 'upload-help' }, K.help)),
    h('div', { class: 'field' }, h('label', { for: 'upload-name' }, 'Name (optional)'), nameInput),
    h('div', { class: 'actions' }, submit),
    bar, status, uploadErrors);

  const listErrors = h('div', { class: 'errors' });
  const tbody = h('tbody');
  const table = h('table', { class: 'files stack', id: `${kind}-table` },
    h('caption', { class: 'sr-only' }, `${K.title}, newest first`),
    h('thead', {}, h('tr', {}, ['Name', 'Id', 'Size', 'Uploaded', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  const empty = h('p', { class: 'empty', hidden: true }, `No ${K.title.toLowerCase()} yet.`);

  clear(main,
    h('div', { class: 'page-head' }, h('h1', {}, K.title)),
    form,
    h('section', { class: 'panel', 'aria-labelledby': 'h-list' },
      h('h2', { id: 'h-list' }, `${K.title} on the server`),
      listErrors, h('div', { class: 'table-wrap' }, table), empty));

  fileInput.addEventListener('change', () => {
    const f = fileInput.files[0];
    if (f && !nameInput.value) nameInput.placeholder = f.name;
  });

  let uploading = false;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = fileInput.files[0];
    if (!f || uploading) return;
    uploading = true;
    submit.disabled = true;
    clear(uploadErrors);
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${f.name}…`;
    let lastPct = -1;
    try {
      const rec = await api.upload(kind, f, nameInput.value.trim() || f.name, (sent, total) => {
        bar.value = total ? sent / total : 0;
        const pct = total ? Math.floor((100 * sent) / total) : 0;
        if (pct !== lastPct && pct % 10 === 0) {   // text every 10 %: enough for a screen reader
          lastPct = pct;
          status.textContent = `Uploading ${f.name}: ${pct} % (${fmtBytes(sent)} of ${fmtBytes(total)})`;
        }
      });
      bar.value = 1;
      status.textContent = `Uploaded ${rec.name} as ${rec.id} (${fmtBytes(rec.size)}).`;
      announce(status.textContent);
      form.reset();
      nameInput.placeholder = 'defaults to the file name';
      await load(rec.id);
    } catch (err) {
      bar.hidden = true;
      status.textContent = '';
      clear(uploadErrors, errorBox(err, `The server refused ${f.name}`));
      fileInput.focus();
    } finally {
      uploading = false;
      submit.disabled = false;
    }
  });

  async function remove(rec) {
    if (!window.confirm(`Delete ${K.one} ${rec.name} (${rec.id})?`)) return;
    try {
      await api.del(`/v1/${kind}/${encodeURIComponent(rec.id)}`);
      announce(`Deleted ${rec.name}`);
      await load();
    } catch (err) {
      clear(listErrors, errorBox(err, `Deleting ${rec.name}`));
    }
  }

  function detailsOf(rec) {
    const facts = [['SHA-256', h('code', { class: 'wrap' }, rec.sha256)], ['Size', `${fmtBytes(rec.size)} (${rec.size} bytes)`],
      ['Uploaded', fmtTime(rec.created)], ['Format', rec.format || '—']];
    const parts = [];
    if (kind === 'models') {
      if (rec.opset !== undefined) facts.push(['Opset', String(rec.opset)]);
      if (rec.ir_version !== undefined) facts.push(['IR version', String(rec.ir_version)]);
      if (rec.producer) facts.push(['Producer', rec.producer]);
      if (rec.nodes !== undefined) facts.push(['Nodes', String(rec.nodes)]);
      const io = (title, list) => (Array.isArray(list) && list.length ? h('div', {},
        h('h3', {}, title),
        h('table', { class: 'compact' },
          h('thead', {}, h('tr', {}, ['Name', 'Shape', 'Type'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.map((x) => h('tr', {}, h('th', { scope: 'row' }, x.name), h('td', {}, fmtShape(x.shape)), h('td', {}, x.dtype || '')))))) : null);
      parts.push(io('Inputs', rec.inputs), io('Outputs', rec.outputs));
      if (rec.ops && typeof rec.ops === 'object') {
        const ops = Object.entries(rec.ops).sort((a, b) => b[1] - a[1]);
        parts.push(h('div', {}, h('h3', {}, 'Operators'),
          h('ul', { class: 'chips' }, ops.map(([op, n]) => h('li', {}, `${op} × ${n}`)))));
      }
    } else if (Array.isArray(rec.arrays)) {
      parts.push(h('div', {}, h('h3', {}, 'Arrays'),
        h('table', { class: 'compact' },
          h('thead', {}, h('tr', {}, ['Name', 'Shape', 'Type'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rec.arrays.map((a) => h('tr', {}, h('th', { scope: 'row' }, a.name || '(the array)'), h('td', {}, fmtShape(a.shape)), h('td', {}, a.dtype || '')))))));
    }
    return h('div', { class: 'details-body' },
      h('dl', { class: 'meta' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('div', { class: 'details-grid' }, parts));
  }

  function row(rec, open) {
    const detailId = `details-${rec.id}`;
    const detailRow = h('tr', { class: 'details-row', id: detailId, hidden: !open },
      h('td', { colspan: 5 }, detailsOf(rec)));
    const toggle = h('button', { type: 'button', class: 'small', 'aria-expanded': open ? 'true' : 'false', 'aria-controls': detailId, 'aria-label': `Details of ${rec.name}` }, 'Details');
    toggle.addEventListener('click', async () => {
      const opening = detailRow.hidden;
      if (opening) {   // the list holds everything; re-read in case it changed
        try {
          const fresh = await api.get(`/v1/${kind}/${encodeURIComponent(rec.id)}`);
          clear(detailRow.firstChild, detailsOf(fresh));
        } catch (err) {
          clear(detailRow.firstChild, errorBox(err));
        }
      }
      detailRow.hidden = !opening;
      toggle.setAttribute('aria-expanded', String(opening));
    });
    const tr = h('tr', { 'data-id': rec.id },
      h('th', { scope: 'row', 'data-label': 'Name' }, rec.name),
      h('td', { 'data-label': 'Id' }, h('code', { title: rec.id }, shortId(rec.id))),
      h('td', { 'data-label': 'Size' }, fmtBytes(rec.size)),
      h('td', { 'data-label': 'Uploaded', title: fmtTime(rec.created) }, fmtAge(rec.created)),
      h('td', { 'data-label': 'Actions', class: 'row-actions' }, toggle,
        h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete ${rec.name}`, onclick: () => remove(rec) }, 'Delete')));
    return [tr, detailRow];
  }

  async function load(openId) {
    let list;
    try {
      list = await api.get(`/v1/${kind}`);
    } catch (err) {
      clear(listErrors, errorBox(err, `Loading the ${K.title.toLowerCase()}`));
      return;
    }
    clear(listErrors);
    const recs = list[kind] || [];
    clear(tbody, recs.map((r) => row(r, r.id === openId)));
    table.hidden = !recs.length;
    empty.hidden = recs.length > 0;
  }

  await load();
  return null;
}

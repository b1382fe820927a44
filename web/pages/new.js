// New job: a form for the job spec (../shared/DESIGN.md "Job spec") of ptq, qat, analyze and
// eval, with the preset's values filled in (the server's, GET /v1/presets). The spec sent holds
// the preset plus only the fields the user changed from it (unticking a box that is on by default
// sends an explicit false). The server validates the spec (with the engine's spec table) and
// records it normalised; a refused field is shown with the server's message and focused.

import * as api from '../api.js';
import { h, clear, errorBox, announce, fmtBytes } from '../util.js';

// The presets come from the server (GET /v1/presets, the engine's spec table in engine/spec_rows.c):
// what an untouched field means. Flattened to 'weights.bits' → 8.
let PRESETS = {};
let OFFERED = [];   // [{name, about}]: the presets to offer, in order of cost, with what each costs

function flatten(obj, prefix = '', out = {}) {
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
    else out[`${prefix}${k}`] = v;
  }
  return out;
}

const TYPES = [
  ['ptq', 'PTQ', 'post-training quantization: the standard pipeline of the white paper (Fig. 8)'],
  ['qat', 'QAT', 'quantization-aware training, initialised from PTQ'],
  ['analyze', 'Analyze', 'per-layer sensitivity and range diagnostics (§3.7)'],
  ['eval', 'Evaluate', 'accuracy of a model as it is'],
];

// Which config groups each job type takes.
const GROUPS = {
  ptq: ['quant', 'passes', 'adaround', 'calib'],
  qat: ['quant', 'passes', 'adaround', 'calib', 'qat'],
  analyze: ['quant', 'passes', 'calib'],
  eval: ['eval'],
};

// [path, label, kind, extra]: kind is int | num | bool | choice
const FIELDS = {
  quant: [
    ['weights.bits', 'Weight bits', 'int', { min: 2, max: 16 }],
    ['weights.symmetric', 'Symmetric weights', 'bool'],
    ['weights.per_channel', 'Per-channel weights', 'bool'],
    ['weights.range', 'Weight range setting', 'choice', { choices: ['mse', 'minmax'] }],
    ['activations.bits', 'Activation bits', 'int', { min: 2, max: 16 }],
    ['activations.symmetric', 'Symmetric activations', 'bool'],
    ['activations.range', 'Activation range setting', 'choice', { choices: ['mse', 'minmax', 'percentile', 'ce', 'bn'] }],
    ['target', 'Target runtime', 'choice', { choices: ['ort-x86', 'generic'] }],
    ['weights.reduce_range', 'Reduce weight range where the target needs it', 'bool'],
  ],
  passes: [
    ['bn_fold', 'Fold batch norm', 'bool'],
    ['cle', 'Cross-layer equalization', 'bool'],
    ['bias_absorption', 'High-bias absorption', 'bool'],
    ['bias_correction', 'Bias correction', 'choice', { choices: ['empirical', 'analytical', 'none'] }],
  ],
  adaround: [
    ['rounding', 'Weight rounding', 'choice', { choices: ['adaround', 'gptq', 'nearest'] }],
    ['adaround.enabled', 'AdaRound', 'bool'],
    ['adaround.iterations', 'AdaRound iterations per layer', 'int', { min: 1, max: 1000000 }],
    ['adaround.reg', 'AdaRound regularisation λ', 'num', { min: 0, step: 'any' }],
    ['adaround.batch_size', 'AdaRound batch size', 'int', { min: 1, max: 65536 }],
  ],
  calib: [
    ['calibration.samples', 'Calibration samples', 'int', { min: 1 }],
    ['calibration.batch_size', 'Calibration batch size', 'int', { min: 1, max: 65536 }],
  ],
  qat: [
    ['qat.epochs', 'Epochs', 'int', { min: 0, max: 10000 }],
    ['qat.batch_size', 'Training batch size', 'int', { min: 1, max: 65536 }],
    ['qat.optimizer', 'Optimizer', 'choice', { choices: ['adam', 'sgd', 'nesterov'] }],
    ['qat.lr', 'Learning rate', 'num', { min: 0, max: 10, step: 'any' }],
    ['qat.learn_ranges', 'Learn quantizer ranges', 'bool'],
    ['qat.bn_reestimate', 'Re-estimate batch norm after training', 'bool'],
  ],
  eval: [
    ['batch_size', 'Batch size', 'int', { min: 1, max: 65536, optional: true }],
  ],
};

const GROUP_TITLES = {
  quant: 'Quantization grid',
  passes: 'Passes before quantization',
  adaround: 'Weight rounding',
  calib: 'Calibration',
  qat: 'Training',
  eval: 'Evaluation',
};

const inputId = (path) => `cfg-${path.replace(/\./g, '-')}`;

export async function render(main, { query }) {
  const errors = h('div', { id: 'new-job-errors' });
  let models = [];
  let datasets = [];
  try {
    const [m, d, p] = await Promise.all([api.get('/v1/models'), api.get('/v1/datasets'), api.get('/v1/presets')]);
    models = m.models || [];
    datasets = d.datasets || [];
    PRESETS = Object.fromEntries(Object.entries(p.presets || {}).map(([name, cfg]) => [name, flatten(cfg)]));
    OFFERED = p.offered || Object.keys(PRESETS).map((name) => ({ name, about: '' }));
  } catch (err) {
    clear(main, h('h1', {}, 'New job'), errorBox(err, 'Loading models, data sets and presets'));
    return null;
  }
  const initialType = TYPES.some(([t]) => t === query.get('type')) ? query.get('type') : 'ptq';

  // --- type ---------------------------------------------------------------------------------
  const typeFieldset = h('fieldset', { class: 'types' }, h('legend', {}, 'Job type'),
    TYPES.map(([t, label, desc]) => h('div', { class: 'radio' },
      h('input', { type: 'radio', name: 'type', id: `type-${t}`, value: t, checked: t === initialType, 'aria-describedby': `type-${t}-desc` }),
      h('label', { for: `type-${t}` }, label),
      h('span', { class: 'hint', id: `type-${t}-desc` }, ` — ${desc}`))));

  // --- data ---------------------------------------------------------------------------------
  const dsOptions = (placeholder) => [h('option', { value: '' }, placeholder),
    datasets.map((d) => h('option', { value: d.id }, `${d.name} — ${(d.arrays || []).map((a) => `[${(a.shape || []).join('×')}]`).join(' ')} (${fmtBytes(d.size)})`))];
  const sel = (id, field, label, options, hint) => {
    const s = h('select', { id, 'data-field': field }, options);
    return { s, el: h('div', { class: 'field', 'data-for': field }, h('label', { for: id }, label), s, hint ? h('p', { class: 'hint' }, hint) : null) };
  };
  const model = sel('job-model', 'model', 'Model', [h('option', { value: '' }, models.length ? 'Choose a model' : 'No models: upload one first'),
    models.map((m) => h('option', { value: m.id }, `${m.name} (${m.id})`))]);
  model.s.required = true;
  const calib = sel('job-calibration', 'calibration', 'Calibration data', dsOptions('None'), 'Unlabelled inputs for ranges, bias correction and AdaRound.');
  const valData = sel('job-val-data', 'validation.data', 'Validation inputs', dsOptions('None'));
  const valLabels = sel('job-val-labels', 'validation.labels', 'Validation labels', dsOptions('None'));
  const trainData = sel('job-train-data', 'train.data', 'Training inputs', dsOptions('Choose a data set'));
  const trainLabels = sel('job-train-labels', 'train.labels', 'Training labels', dsOptions('Choose a data set'));
  const nameInput = h('input', { type: 'text', id: 'job-name', 'data-field': 'name', maxlength: 200, autocomplete: 'off' });
  if (models.length === 1) model.s.value = models[0].id;

  const dataSection = h('fieldset', { class: 'panel' }, h('legend', {}, 'Model and data'),
    h('div', { class: 'grid' }, model.el,
      h('div', { class: 'field' }, h('label', { for: 'job-name' }, 'Job name (optional)'), nameInput),
      calib.el, valData.el, valLabels.el, trainData.el, trainLabels.el));
  if (!datasets.length) dataSection.append(h('p', { class: 'hint' }, 'No data sets yet: ', h('a', { href: '#/datasets' }, 'upload some'), '.'));

  // --- config -------------------------------------------------------------------------------
  const presetSel = h('select', { id: 'cfg-preset', 'data-field': 'config.preset', 'aria-describedby': 'cfg-preset-hint' },
    OFFERED.map((p) => h('option', { value: p.name }, p.name)));
  const presetHint = h('p', { class: 'hint', id: 'cfg-preset-hint' });
  const inputs = new Map();   // path → input element
  const groups = {};
  for (const [g, fields] of Object.entries(FIELDS)) {
    groups[g] = h('fieldset', { class: 'panel', 'data-group': g }, h('legend', {}, GROUP_TITLES[g]),
      h('div', { class: 'grid' }, fields.map(([path, label, kind, extra = {}]) => {
        const id = inputId(path);
        const field = g === 'eval' ? `config.${path}` : `config.${path}`;
        let input;
        if (kind === 'bool') {
          input = h('input', { type: 'checkbox', id, 'data-field': field });
          inputs.set(path, input);
          return h('div', { class: 'field check', 'data-for': field }, input, h('label', { for: id }, label));
        }
        if (kind === 'choice') input = h('select', { id, 'data-field': field }, extra.choices.map((c) => h('option', { value: c }, c)));
        else {
          input = h('input', { type: 'number', id, 'data-field': field, inputmode: kind === 'int' ? 'numeric' : 'decimal' });
          if (extra.min !== undefined) input.min = extra.min;
          if (extra.max !== undefined) input.max = extra.max;
          input.step = kind === 'int' ? '1' : extra.step || 'any';
        }
        inputs.set(path, input);
        return h('div', { class: 'field', 'data-for': field }, h('label', { for: id }, label), input);
      })));
  }
  const excludeInput = h('input', { type: 'text', id: 'cfg-exclude', 'data-field': 'config.exclude', autocomplete: 'off', placeholder: 'node names, comma-separated', 'aria-describedby': 'cfg-exclude-hint' });
  const presetBox = h('fieldset', { class: 'panel', 'data-group': 'preset' }, h('legend', {}, 'Preset'),
    h('div', { class: 'grid' },
      h('div', { class: 'field' }, h('label', { for: 'cfg-preset' }, 'Start from'), presetSel, presetHint),
      h('div', { class: 'field' }, h('label', { for: 'cfg-exclude' }, 'Keep in float (exclude)'), excludeInput,
        h('p', { class: 'hint', id: 'cfg-exclude-hint' }, 'Layers left unquantized.'))),
    h('button', { type: 'button', class: 'small', id: 'cfg-reset', onclick: () => fillPreset(presetSel.value) }, 'Reset to preset'));

  function fillPreset(name) {
    const p = PRESETS[name] || PRESETS.standard;
    presetHint.textContent = (OFFERED.find((o) => o.name === name) || { about: '' }).about;
    for (const [path, input] of inputs) {
      const v = p[path];
      if (input.type === 'checkbox') input.checked = !!v;
      else input.value = v === undefined ? '' : String(v);
      input.removeAttribute('aria-invalid');
    }
  }
  presetSel.addEventListener('change', () => fillPreset(presetSel.value));
  // config.rounding and adaround.enabled say one thing (the server refuses them contradicting)
  const roundSel = inputs.get('rounding'), adaBox = inputs.get('adaround.enabled');
  roundSel.addEventListener('change', () => { adaBox.checked = roundSel.value === 'adaround'; });
  adaBox.addEventListener('change', () => { roundSel.value = adaBox.checked ? 'adaround' : 'nearest'; });
  presetSel.value = 'standard';
  fillPreset('standard');

  const submit = h('button', { type: 'submit', class: 'primary', id: 'submit-job' }, 'Submit job');
  const form = h('form', { id: 'new-job', novalidate: true },
    typeFieldset, dataSection, presetBox, Object.values(groups),
    h('details', { class: 'panel' }, h('summary', {}, 'Job spec that will be sent'), h('pre', { class: 'json', id: 'spec-preview', tabindex: 0 })),
    errors,
    h('div', { class: 'actions sticky' }, submit));

  clear(main, h('div', { class: 'page-head' }, h('h1', {}, 'New job')),
    models.length ? null : h('p', { class: 'alert info' }, 'There is no model on the server yet: ', h('a', { href: '#/models' }, 'upload one'), ' first.'),
    form);

  const type = () => form.querySelector('input[name="type"]:checked').value;

  function showFor(t) {
    const g = GROUPS[t];
    for (const [name, fs] of Object.entries(groups)) fs.hidden = !g.includes(name);
    presetBox.hidden = t === 'eval';
    trainData.el.hidden = trainLabels.el.hidden = t !== 'qat';
    calib.el.hidden = t === 'eval';
    valData.s.required = valLabels.s.required = t === 'eval' || t === 'analyze';
    trainData.s.required = trainLabels.s.required = t === 'qat';
    for (const s of [valData, valLabels]) s.el.querySelector('label').textContent =
      `${s === valData ? 'Validation inputs' : 'Validation labels'}${s.s.required ? '' : ' (optional: for accuracy)'}`;
    preview();
  }

  function readValue(path, input) {
    if (input.type === 'checkbox') return input.checked;
    if (input.tagName === 'SELECT') return input.value;
    if (input.value === '') return undefined;
    return Number(input.value);
  }

  function buildSpec() {
    const t = type();
    const spec = { type: t, model: model.s.value || undefined };
    if (nameInput.value.trim()) spec.name = nameInput.value.trim();
    if (t !== 'eval' && calib.s.value) spec.calibration = calib.s.value;
    if (valData.s.value || valLabels.s.value) spec.validation = { data: valData.s.value || undefined, labels: valLabels.s.value || undefined };
    if (t === 'qat') spec.train = { data: trainData.s.value || undefined, labels: trainLabels.s.value || undefined };
    const config = {};
    const set = (path, v) => {
      const keys = path.split('.');
      let o = config;
      for (const k of keys.slice(0, -1)) o = o[k] || (o[k] = {});
      o[keys[keys.length - 1]] = v;
    };
    if (t === 'eval') {
      const v = readValue('batch_size', inputs.get('batch_size'));
      if (v !== undefined) set('batch_size', v);
    } else {
      const preset = presetSel.value;
      set('preset', preset);
      const defaults = PRESETS[preset];
      for (const g of GROUPS[t]) {
        for (const [path] of FIELDS[g]) {
          const v = readValue(path, inputs.get(path));
          if (v !== undefined && v !== defaults[path]) set(path, v);
        }
      }
      const ex = excludeInput.value.split(',').map((s) => s.trim()).filter(Boolean);
      if (ex.length) set('exclude', ex);
    }
    if (Object.keys(config).length) spec.config = config;
    return JSON.parse(JSON.stringify(spec));   // drops the undefined members
  }

  function preview() {
    form.querySelector('#spec-preview').textContent = JSON.stringify(buildSpec(), null, 2);
  }

  form.addEventListener('change', (e) => {
    if (e.target.name === 'type') showFor(type());
    else preview();
  });
  form.addEventListener('input', preview);

  // Client-side checks name the field the same way the server does; the server has the last word.
  function localProblem(spec) {
    if (!spec.model) return { field: 'model', message: "'model' is required: choose a model" };
    if (spec.type === 'qat' && !(spec.train && spec.train.data && spec.train.labels)) {
      return { field: spec.train && spec.train.data ? 'train.labels' : 'train.data', message: 'QAT needs training inputs and labels' };
    }
    if ((spec.type === 'eval' || spec.type === 'analyze') && !(spec.validation && spec.validation.data && spec.validation.labels)) {
      return { field: spec.validation && spec.validation.data ? 'validation.labels' : 'validation.data', message: `${spec.type} needs validation inputs and labels` };
    }
    if (spec.validation && (!spec.validation.data || !spec.validation.labels)) {
      return { field: spec.validation.data ? 'validation.labels' : 'validation.data', message: 'validation needs both inputs and labels' };
    }
    for (const input of inputs.values()) {
      if (!input.closest('[hidden]') && input.type === 'number' && !input.checkValidity()) {
        return { field: input.dataset.field, message: `${input.labels[0].textContent}: ${input.validationMessage}` };
      }
    }
    return null;
  }

  function markField(field) {
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (!field) return;
    // the server names config fields by their path ("config.weights.bits")
    const el = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
    if (el) {
      el.setAttribute('aria-invalid', 'true');
      el.setAttribute('aria-errormessage', 'new-job-errors');
      el.focus();
    }
  }

  let sending = false;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (sending) return;
    const spec = buildSpec();
    const local = localProblem(spec);
    if (local) {
      clear(errors, errorBox(local, 'Check the form'));
      markField(local.field);
      return;
    }
    sending = true;
    submit.disabled = true;
    clear(errors);
    markField(null);
    try {
      const job = await api.post('/v1/jobs', spec);
      announce(`Job ${job.id} submitted`);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      clear(errors, errorBox(err, 'The server refused the job'));
      markField(err.field);
      if (!err.field) errors.scrollIntoView({ block: 'nearest' });
    } finally {
      sending = false;
      submit.disabled = false;
    }
  });

  showFor(initialType);
  return null;
}

// The dashboard's entry: a hash router over the pages, the token dialog, the server badge.
//
// Routes: #/jobs[?state=S]  #/jobs/{id}  #/models  #/datasets  #/new[?type=T]. A page module
// exports render(main, params) → cleanup function (or a promise of one); the router runs the
// previous page's cleanup (closing its event streams, destroying its charts) before the next
// renders, then moves focus to the new page's heading so keyboard and screen-reader users land
// on what changed.

import * as api from './api.js';
import { h, clear, errorBox } from './util.js';
import { destroyCharts } from './charts.js';
import * as jobsPage from './pages/jobs.js';
import * as jobPage from './pages/job.js';
import * as filesPage from './pages/files.js';
import * as newPage from './pages/new.js';

const main = document.getElementById('main');

const routes = [
  { re: /^\/jobs\/([^/]+)$/, nav: 'jobs', page: (p) => jobPage.render(main, p) },
  { re: /^\/jobs$/, nav: 'jobs', page: (p) => jobsPage.render(main, p) },
  { re: /^\/models$/, nav: 'models', page: (p) => filesPage.render(main, { ...p, kind: 'models' }) },
  { re: /^\/datasets$/, nav: 'datasets', page: (p) => filesPage.render(main, { ...p, kind: 'datasets' }) },
  { re: /^\/new$/, nav: 'new', page: (p) => newPage.render(main, p) },
];

let cleanup = null;
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const [path, qs] = raw.split('?');
  return { path, query: new URLSearchParams(qs || '') };
}

async function route() {
  const gen = ++generation;
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
    cleanup = null;
  }
  destroyCharts(main);
  const { path, query } = parseHash();
  let r = null;
  let m = null;
  for (const cand of routes) {
    m = path.match(cand.re);
    if (m) {
      r = cand;
      break;
    }
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (r && a.dataset.nav === r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!r) {
    clear(main, h('h1', { tabindex: -1 }, 'Not found'),
      h('p', {}, 'No page at ', h('code', {}, `#${path}`), '. ', h('a', { href: '#/jobs' }, 'Go to the jobs.')));
    focusHeading();
    return;
  }
  clear(main);
  try {
    const c = await r.page({ id: m[1] ? decodeURIComponent(m[1]) : null, query });
    if (gen !== generation) {   // the user moved on while this page was loading
      if (typeof c === 'function') c();
      return;
    }
    cleanup = typeof c === 'function' ? c : null;
  } catch (err) {
    if (gen !== generation) return;
    console.error(err);
    clear(main, h('h1', { tabindex: -1 }, 'Something went wrong'), errorBox(err));
  }
  if (gen === generation) focusHeading();
  health();
}

let firstRoute = true;
function focusHeading() {
  const h1 = main.querySelector('h1');
  if (!h1) return;
  h1.setAttribute('tabindex', '-1');
  document.title = `${h1.textContent} — quantd`;
  if (firstRoute) {   // on load, leave focus where the browser put it
    firstRoute = false;
    return;
  }
  h1.focus({ preventScroll: false });
}

// --- the token dialog ------------------------------------------------------------------------

const dialog = document.getElementById('token-dialog');
const tokenInput = document.getElementById('token-input');
const tokenReason = document.getElementById('token-reason');

api.setTokenPrompt((reason) => new Promise((resolve) => {
  tokenReason.textContent = reason ? `The server said: ${reason}.` : '';
  tokenInput.value = '';
  const done = () => {
    dialog.removeEventListener('close', done);
    resolve(dialog.returnValue === 'ok' && tokenInput.value.trim() ? tokenInput.value.trim() : null);
  };
  dialog.addEventListener('close', done);
  dialog.returnValue = '';
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else resolve(window.prompt('Bearer token for this server') || null);
  tokenInput.focus();
}));

const signOut = document.getElementById('sign-out');
signOut.hidden = !api.token();
api.onTokenChange((has) => { signOut.hidden = !has; });
signOut.addEventListener('click', () => {
  api.setToken('');
  route();
});

// --- server badge: version and load, from the public health route -----------------------------

async function health() {
  const el = document.getElementById('server-status');
  try {
    const s = await api.get('/v1/health');
    el.textContent = `v${s.version} · ${s.jobs.running} running · ${s.jobs.queued} queued`;
    el.classList.remove('down');
  } catch (err) {
    el.textContent = 'server unreachable';
    el.classList.add('down');
  }
}

window.addEventListener('hashchange', route);
route();
setInterval(() => { if (!document.hidden) health(); }, 5000);

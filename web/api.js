// The dashboard's only door to quantd: REST API v1 (../shared/DESIGN.md, api/openapi.json).
//
//   import * as api from './api.js';
//   const jobs = await api.get('/v1/jobs?state=running');        // parsed JSON
//   await api.upload('models', file, name, (sent, total) => …);   // XMLHttpRequest: upload progress
//   const s = api.follow(jobId, { event(ev) {…}, end() {…} });    // Server-Sent Events; s.close()
//
// Every failure is an ApiError carrying the server's {"error": {code, message, field, hint}}, so
// pages can show the message as the API wrote it. The bearer token lives in sessionStorage (this
// tab, this session); when a request comes back 401, the page asks for a token once (one dialog
// even if several requests fail together), and the request is retried with it. The event stream
// is read with fetch() rather than EventSource because EventSource cannot send a header.

const TOKEN_KEY = 'quantd.token';

export class ApiError extends Error {
  constructor(status, message, { code = '', field = null, hint = '' } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.hint = hint;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token lasts for this page only */ }
  tokenListeners.forEach((f) => f(!!t));
}

const tokenListeners = [];
export function onTokenChange(f) { tokenListeners.push(f); }

// The app installs the dialog: prompt(reason) → Promise<string|null>.
let prompt = async () => null;
export function setTokenPrompt(fn) { prompt = fn; }

let asking = null;
// One dialog for every request that needs a token at the same moment.
function askToken(reason) {
  if (!asking) {
    asking = Promise.resolve(prompt(reason)).then((t) => {
      asking = null;
      if (t) setToken(t);
      return t || null;
    });
  }
  return asking;
}

function withAuth(headers = {}) {
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  return headers;
}

// An ApiError from a reply's status and body text.
function errorFrom(status, statusText, text) {
  try {
    const e = JSON.parse(text).error;
    if (e && e.message) return new ApiError(status, e.message, e);
  } catch { /* not our JSON: fall through */ }
  return new ApiError(status, `HTTP ${status}${statusText ? ` ${statusText}` : ''}`);
}

function networkError(err) {
  return new ApiError(0, `cannot reach the server (${err && err.message ? err.message : err})`, { code: 'network' });
}

// Sends a request; a 401 asks for a token and retries once with it.
export async function request(method, path, { json, body, headers = {}, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const h = withAuth({ Accept: 'application/json', ...headers });
    let data = body;
    if (json !== undefined) {
      h['Content-Type'] = 'application/json';
      data = JSON.stringify(json);
    }
    let res;
    try {
      res = await fetch(path, { method, headers: h, body: data, signal, cache: 'no-store' });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw networkError(err);
    }
    if (res.status === 401 && attempt === 0) {
      const text = await res.text();
      const why = errorFrom(401, res.statusText, text).message;
      if (token()) setToken('');   // the one we had is no good
      if (await askToken(why)) continue;
      throw new ApiError(401, `${why} (no token given)`, { code: 'unauthorized' });
    }
    if (res.status === 204) return null;
    const text = await res.text();
    if (!res.ok) throw errorFrom(res.status, res.statusText, text);
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
}

export const get = (path, opts) => request('GET', path, opts);
export const del = (path, opts) => request('DELETE', path, opts);
export const post = (path, json, opts = {}) => request('POST', path, { ...opts, json });

// Uploads a File as the raw body of POST /v1/{models|datasets}?name=…; onProgress(sent, total).
// XMLHttpRequest, because fetch() reports no upload progress.
export function upload(kind, file, name, onProgress, attempt = 0) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const q = name ? `?name=${encodeURIComponent(name)}` : '';
    xhr.open('POST', `/v1/${kind}${q}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    const t = token();
    if (t) xhr.setRequestHeader('Authorization', `Bearer ${t}`);
    xhr.upload.onprogress = (e) => onProgress && onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(networkError('the upload was interrupted'));
    xhr.onabort = () => reject(new ApiError(0, 'the upload was cancelled', { code: 'aborted' }));
    xhr.onload = async () => {
      if (xhr.status === 401 && attempt === 0) {
        const why = errorFrom(401, xhr.statusText, xhr.responseText).message;
        if (token()) setToken('');
        if (await askToken(why)) {
          upload(kind, file, name, onProgress, 1).then(resolve, reject);
          return;
        }
        reject(new ApiError(401, `${why} (no token given)`, { code: 'unauthorized' }));
        return;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          resolve(null);
        }
      } else {
        reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
      }
    };
    xhr.send(file);
  });
}

// Downloads an artifact. Without a token a plain link does it (the browser streams to disk);
// with one, the file is fetched with the header and handed over as a blob.
export async function download(url, filename) {
  let res;
  try {
    res = await fetch(url, { headers: withAuth({}), cache: 'no-store' });
  } catch (err) {
    throw networkError(err);
  }
  if (res.status === 401) {
    const why = errorFrom(401, res.statusText, await res.text()).message;
    if (token()) setToken('');
    if (await askToken(why)) return download(url, filename);
    throw new ApiError(401, why, { code: 'unauthorized' });
  }
  if (!res.ok) throw errorFrom(res.status, res.statusText, await res.text());
  const blob = await res.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
export const isTerminal = (state) => TERMINAL.has(state);

// Follows GET /v1/jobs/{id}/events: calls h.event({id, type, data}) for each event (replayed from
// the start, or after h.after), h.end() once the job has ended and everything was delivered,
// h.error(err) on a failure (it then reconnects after 2 s, resuming with Last-Event-ID).
export function follow(jobId, h) {
  const ctl = new AbortController();
  let last = h.after || 0;
  let closed = false;
  let retry = 2000;

  function parse(block) {
    const ev = { id: null, type: 'message', data: '' };
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') ev.id = Number(value);
      else if (field === 'event') ev.type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value);
    }
    if (!data.length) return null;
    try {
      ev.data = JSON.parse(data.join('\n'));
    } catch {
      ev.data = data.join('\n');
    }
    return ev;
  }

  async function run() {
    let asked = false;
    while (!closed) {
      let ended = false;
      try {
        const headers = withAuth({ Accept: 'text/event-stream' });
        if (last) headers['Last-Event-ID'] = String(last);
        const res = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`,
          { headers, signal: ctl.signal, cache: 'no-store' });
        if (res.status === 204) {   // ended, nothing left to send
          if (!closed && h.end) h.end();
          return;
        }
        if (res.status === 401 && !asked) {
          asked = true;
          const why = errorFrom(401, res.statusText, await res.text()).message;
          if (token()) setToken('');
          if (await askToken(why)) continue;
          throw new ApiError(401, why, { code: 'unauthorized' });
        }
        if (!res.ok) {
          const err = errorFrom(res.status, res.statusText, await res.text());
          if (res.status >= 400 && res.status < 500) {   // will not get better by retrying
            if (h.error) h.error(err, true);
            return;
          }
          throw err;
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let k;
          while ((k = buf.indexOf('\n\n')) >= 0) {
            const ev = parse(buf.slice(0, k));
            buf = buf.slice(k + 2);
            if (!ev || closed) continue;
            if (ev.id != null && !Number.isNaN(ev.id)) last = ev.id;
            if (ev.type === 'state' && ev.data && isTerminal(ev.data.state)) ended = true;
            if (h.event) h.event(ev);
          }
        }
        if (ended) {
          if (!closed && h.end) h.end();
          return;
        }
      } catch (err) {
        if (closed || (err && err.name === 'AbortError')) return;
        if (h.error) h.error(err instanceof ApiError ? err : networkError(err), false);
      }
      if (closed) return;
      await new Promise((r) => setTimeout(r, retry));
    }
  }
  run();
  return {
    close() {
      closed = true;
      ctl.abort();
    },
  };
}

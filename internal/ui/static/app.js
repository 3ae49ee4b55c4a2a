// wharf's web UI: a client of the admin API (package adminapi; its package
// doc lists the endpoints and the wire format). Vanilla ES2020, no
// dependencies, no build step.
//
// Rules this file keeps:
//   - Every element is built with the DOM API and every value from the
//     server is set as text (textContent, attributes), never parsed as HTML.
//   - Every admin API path appears once, in the API table below; the Go
//     tests check the table against adminapi's package doc.
//   - One view is active at a time (the page named by location.hash). Its
//     requests, timers and listeners end when the route changes, so a slow
//     answer never paints over another page and no poll outlives its page.
'use strict';

// The admin API endpoints this page calls: [method, path]. {name} segments
// are filled in by api(); query parameters are passed separately.
const API = {
  stats: ['GET', '/api/v1/stats'],
  upstreams: ['GET', '/api/v1/upstreams'],
  repositories: ['GET', '/api/v1/repositories'],
  tags: ['GET', '/api/v1/tags'],
  deleteRepository: ['DELETE', '/api/v1/repositories'],
  deleteTag: ['DELETE', '/api/v1/tags'],
  gc: ['POST', '/api/v1/gc'],
  prefetch: ['POST', '/api/v1/prefetch'],
  prefetchJobs: ['GET', '/api/v1/prefetch'],
  prefetchJob: ['GET', '/api/v1/prefetch/{id}'],
  cancelPrefetch: ['DELETE', '/api/v1/prefetch/{id}'],
};

const TOKEN_KEY = 'wharf.adminToken'; // sessionStorage: gone when the tab closes
const OVERVIEW_REFRESH_MS = 5000;
const JOB_POLL_MS = 500;
const JOBS_REFRESH_MS = 2000;
const SEARCH_DEBOUNCE_MS = 250;
const PAGE_SIZE = 50;
const TERMINAL = new Set(['done', 'failed', 'canceled']);

// ---------------------------------------------------------------------------
// DOM helpers

const $ = (sel) => document.querySelector(sel);

// h builds an element. attrs are set as attributes (true: present, false or
// null: absent), except on* keys, which add event listeners.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// fill replaces el's children, leaving out null and undefined (which
// replaceChildren would print as text).
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function setText(sel, text) {
  $(sel).textContent = text;
}

// ---------------------------------------------------------------------------
// Formatting

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

function fmtBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < BYTE_UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${BYTE_UNITS[i]}`;
}

const numberFormat = new Intl.NumberFormat('en-US');
const fmtCount = (n) => (typeof n === 'number' ? numberFormat.format(n) : '—');
const fmtPercent = (r) => `${(r * 100).toFixed(1)}%`;

// plural is "1 tag", "2 tags".
const plural = (n, word) => `${fmtCount(n)} ${word}${n === 1 ? '' : 's'}`;

// fmtGoDuration shortens a Go duration string: "720h0m0s" is "30 days",
// "36h0m0s" is "36h".
function fmtGoDuration(s) {
  const m = /^(\d+)h0m0s$/.exec(s || '');
  if (!m) return s;
  const hours = Number(m[1]);
  return hours % 24 === 0 ? plural(hours / 24, 'day') : `${hours}h`;
}

const relativeFormat = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
const RELATIVE_STEPS = [
  ['second', 60], ['minute', 60], ['hour', 24], ['day', 30], ['month', 12], ['year', Infinity],
];

function fmtAgo(iso) {
  const t = Date.parse(iso || '');
  if (Number.isNaN(t)) return '—';
  let v = (t - Date.now()) / 1000;
  for (const [unit, size] of RELATIVE_STEPS) {
    if (Math.abs(v) < size) {
      return unit === 'second' && Math.abs(v) < 5 ? 'just now' : relativeFormat.format(Math.round(v), unit);
    }
    v /= size;
  }
  return '—';
}

// timeEl shows a time relative to now, the exact one on hover.
function timeEl(iso, missing = '—') {
  const t = Date.parse(iso || '');
  if (Number.isNaN(t)) return h('span', { class: 'muted' }, missing);
  return h('time', { datetime: iso, title: new Date(t).toLocaleString() }, fmtAgo(iso));
}

// shortDigest is "sha256:" and the first 12 hex digits.
function shortDigest(d) {
  if (!d) return '—';
  const i = d.indexOf(':');
  return i < 0 ? d.slice(0, 12) : d.slice(0, i + 13);
}

function badge(text, kind, testid) {
  return h('span', { class: `badge badge-${kind}`, 'data-testid': testid }, text);
}

// ---------------------------------------------------------------------------
// The admin API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.handled = false; // true when the UI already reacted (the token form)
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return ''; // storage disabled: no token
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lives no longer than this call's retry.
  }
}

// api calls endpoint ([method, path] from API) and returns the decoded JSON
// answer. path fills {name} segments, query becomes the query string (empty
// values left out). An error answer throws an ApiError carrying the OCI
// error body's code and message.
async function api([method, template], { path = {}, query = {}, body, signal } = {}) {
  let url = template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(String(path[k] ?? '')));
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') params.append(k, String(v));
  }
  const qs = params.toString();
  if (qs) url += `?${qs}`;

  const headers = { Accept: 'application/json' };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, signal, cache: 'no-store', credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }

  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'UNAVAILABLE', `cannot reach the server (${e.message})`);
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401) {
      askForToken(token ? 'The token was not accepted.' : 'This server requires a bearer token for its admin API.');
      err.handled = true;
    }
    throw err;
  }
  if (resp.status === 204) return null;
  return resp.json();
}

// errorFrom reads an error answer: the OCI error body when there is one
// ({"errors":[{"code","message"}]}), the status line otherwise.
async function errorFrom(resp) {
  let text = '';
  try {
    text = await resp.text();
  } catch {
    // The body is lost; the status says enough.
  }
  try {
    const errs = JSON.parse(text).errors;
    if (Array.isArray(errs) && errs.length > 0) {
      const msg = errs.map((e) => e.message || e.code).join('; ');
      return new ApiError(resp.status, errs[0].code || '', msg);
    }
  } catch {
    // Not JSON: fall through.
  }
  const msg = text.trim().slice(0, 300) || resp.statusText || 'request failed';
  return new ApiError(resp.status, '', `${resp.status} ${msg}`);
}

// ---------------------------------------------------------------------------
// Banner and token form

function showError(err, what) {
  const detail = err.code ? `${err.code}: ${err.message}` : err.message;
  setText('#banner-text', what ? `${what}: ${detail}` : detail);
  const banner = $('#banner');
  banner.dataset.code = err.code || '';
  banner.hidden = false;
}

function clearError() {
  $('#banner').hidden = true;
}

function askForToken(reason) {
  storeToken('');
  setText('#auth-reason', `${reason} The token is kept in this tab's session storage only.`);
  const auth = $('#auth');
  if (auth.hidden) {
    auth.hidden = false;
    $('#token-input').focus();
  }
}

// ---------------------------------------------------------------------------
// Views and routing

// A view is the life of one page render: its signal aborts its requests and
// removes its listeners, and its timers are cleared when it closes.
function newView(name, params) {
  const ctl = new AbortController();
  const timers = new Set();
  const view = {
    name,
    params,
    signal: ctl.signal,
    get live() {
      return !ctl.signal.aborted;
    },
    close() {
      ctl.abort();
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
    // after runs fn once in ms unless the view closed; it returns a handle
    // for cancel.
    after(ms, fn) {
      const t = setTimeout(() => {
        timers.delete(t);
        if (view.live) fn();
      }, ms);
      timers.add(t);
      return t;
    },
    cancel(t) {
      clearTimeout(t);
      timers.delete(t);
    },
    // listen adds a listener removed when the view closes.
    listen(el, type, fn) {
      el.addEventListener(type, fn, { signal: ctl.signal });
    },
    // fail reports an error unless it only says the view went away or the
    // token form already took care of it.
    fail(err, what) {
      if (!view.live || err.name === 'AbortError' || err.handled) return;
      showError(err, what);
    },
  };
  return view;
}

const PAGES = {
  overview: { section: 'page-overview', nav: 'overview', title: 'Overview', show: showOverview },
  repositories: { section: 'page-repositories', nav: 'repositories', title: 'Repositories', show: showRepositories },
  repository: { section: 'page-repository', nav: 'repositories', title: 'Repository', show: showRepository },
  prefetch: { section: 'page-prefetch', nav: 'prefetch', title: 'Prefetch', show: showPrefetch },
};

// parseRoute reads "#/<page>?<params>".
function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const i = raw.indexOf('?');
  const name = i < 0 ? raw : raw.slice(0, i);
  const params = new URLSearchParams(i < 0 ? '' : raw.slice(i + 1));
  return PAGES[name] ? { name, params } : { name: 'overview', params };
}

function routeHash(name, params) {
  const qs = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v)).toString();
  return `#/${name}${qs ? `?${qs}` : ''}`;
}

let currentView = null;

function render() {
  if (currentView) currentView.close();
  clearError();
  const { name, params } = parseRoute();
  const page = PAGES[name];
  for (const el of document.querySelectorAll('.page')) el.hidden = el.id !== page.section;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.nav === page.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${page.title} · wharf`;
  currentView = newView(name, params);
  page.show(currentView);
}

// ---------------------------------------------------------------------------
// Overview

function showOverview(v) {
  const refresh = async () => {
    if (!document.hidden) {
      try {
        const [stats, upstreams] = await Promise.all([
          api(API.stats, { signal: v.signal }),
          api(API.upstreams, { signal: v.signal }),
        ]);
        if (!v.live) return;
        renderStats(stats);
        renderUpstreams(upstreams);
      } catch (e) {
        v.fail(e, 'Loading the overview');
      }
    }
    v.after(OVERVIEW_REFRESH_MS, refresh);
  };
  refresh();

  v.listen($('#probe'), 'click', async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const upstreams = await api(API.upstreams, { query: { probe: 1 }, signal: v.signal });
      if (v.live) renderUpstreams(upstreams);
    } catch (e) {
      v.fail(e, 'Probing upstreams');
    } finally {
      button.disabled = false;
    }
  });

  v.listen($('#gc-run'), 'click', async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const report = await api(API.gc, { signal: v.signal });
      if (!v.live) return;
      const out = $('#gc-report');
      out.replaceChildren(h('strong', {}, 'This run: '), gcSummary(report));
      out.hidden = false;
      const stats = await api(API.stats, { signal: v.signal });
      if (v.live) renderStats(stats);
    } catch (e) {
      v.fail(e, 'Running eviction');
    } finally {
      button.disabled = false;
    }
  });
}

function renderStats(s) {
  const c = s.cache || {};
  const t = s.traffic || {};
  // "1.2.3" reads as v1.2.3; "dev" or a commit stays as it is.
  setText('#version', /^\d/.test(s.version || '') ? `v${s.version}` : s.version || '');

  const size = $('#cache-size');
  size.dataset.bytes = String(c.bytes || 0);
  const meter = $('#cache-meter');
  if (c.max_bytes > 0) {
    size.replaceChildren(fmtBytes(c.bytes), ' ',
      h('span', { class: 'muted small' }, `of ${fmtBytes(c.max_bytes)} · ${fmtPercent(c.bytes / c.max_bytes)}`));
    meter.max = c.max_bytes;
    meter.high = c.max_bytes * 0.9; // eviction brings the cache back under 90%
    meter.value = Math.min(c.bytes, c.max_bytes);
    meter.hidden = false;
  } else {
    size.replaceChildren(fmtBytes(c.bytes), ' ', h('span', { class: 'muted small' }, 'unbounded'));
    meter.hidden = true;
  }
  setText('#cache-manifests', fmtCount(c.manifests));
  setText('#cache-blobs', fmtCount(c.blobs));
  setText('#cache-max-age', c.max_age ? fmtGoDuration(c.max_age) : 'none');

  const ratio = $('#hit-ratio');
  ratio.textContent = t.hits + t.misses > 0 ? fmtPercent(t.hit_ratio || 0) : '—';
  ratio.dataset.ratio = String(t.hit_ratio || 0);
  setText('#requests', fmtCount(t.requests));
  setText('#hits-misses', `${fmtCount(t.hits)} / ${fmtCount(t.misses)}`);
  setText('#bytes-saved', fmtBytes(t.bytes_from_cache));
  setText('#bytes-fetched', fmtBytes(t.bytes_fetched));
  setText('#stale-serves', fmtCount(t.stale_serves));
  $('#started').replaceChildren(timeEl(s.started));

  const last = $('#last-gc');
  if (c.last_gc) {
    last.replaceChildren(h('span', { class: 'muted' }, 'Last run '), timeEl(c.last_gc.started), ': ', gcSummary(c.last_gc));
  } else {
    last.replaceChildren(h('span', { class: 'muted' }, 'No eviction has run yet.'));
  }
}

// gcSummary describes one eviction run.
function gcSummary(r) {
  const parts = [
    `evicted ${plural(r.manifests, 'manifest')} and ${plural(r.blobs, 'blob')}, ${fmtBytes(r.bytes)} freed`,
    `cache ${fmtBytes(r.size_before)} → ${fmtBytes(r.size_after)}`,
  ];
  if (r.in_use) parts.push(`${fmtCount(r.in_use)} skipped while in use`);
  if (r.duration) parts.push(`took ${r.duration}`);
  return h('span', {},
    parts.join('; '),
    r.error ? h('span', { class: 'error' }, ` — ${r.error}`) : null);
}

function renderUpstreams(list) {
  const rows = (list || []).map((u) => {
    const health = ['ok', 'down'].includes(u.health) ? u.health : 'unknown';
    const b = badge(health, health, 'upstream-health');
    const tip = [];
    if (u.error) tip.push(u.error);
    if (u.last_error) tip.push(`last error ${new Date(u.last_error).toLocaleString()}`);
    if (tip.length) b.title = tip.join(' — ');
    return h('tr', { 'data-testid': 'upstream-row', 'data-upstream': u.name },
      h('td', {}, h('strong', {}, u.name),
        u.aliases && u.aliases.length ? h('div', { class: 'muted small' }, `aliases: ${u.aliases.join(', ')}`) : null),
      h('td', {}, h('code', {}, u.url)),
      h('td', {}, b, u.health === 'down' && u.error ? h('div', { class: 'error small' }, u.error) : null),
      h('td', {}, rateLimitEl(u.rate_limit)),
      h('td', {}, timeEl(u.last_ok, 'never')));
  });
  $('#upstreams tbody').replaceChildren(...rows);
}

function rateLimitEl(rl) {
  if (!rl) return h('span', { class: 'muted' }, '—');
  const n = (x) => (x < 0 ? '?' : fmtCount(x));
  const text = `${n(rl.remaining)}/${n(rl.limit)}${rl.window ? ` per ${rl.window}` : ''}`;
  const tip = [`seen ${fmtAgo(rl.seen)}`];
  if (rl.source) tip.push(`source ${rl.source}`);
  return h('span', { 'data-testid': 'rate-limit', title: tip.join(', ') }, text);
}

// ---------------------------------------------------------------------------
// Repositories

function showRepositories(v) {
  const input = $('#repo-search');
  const select = $('#repo-upstream');
  const tbody = $('#repos tbody');
  const more = $('#repos-more');
  const empty = $('#repos-empty');
  input.value = v.params.get('q') || '';
  const wantUpstream = v.params.get('upstream') || '';

  let seq = 0; // the latest load; older answers are dropped
  let next = '';
  let debounce = null;

  const load = async (append) => {
    const mine = ++seq;
    more.disabled = true;
    try {
      const page = await api(API.repositories, {
        query: {
          q: input.value.trim(),
          upstream: select.value,
          limit: PAGE_SIZE,
          cursor: append ? next : '',
        },
        signal: v.signal,
      });
      if (!v.live || mine !== seq) return;
      const rows = (page.repositories || []).map(repoRow);
      if (append) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      next = page.next || '';
      more.hidden = !next;
      $('#repos').hidden = tbody.children.length === 0;
      empty.hidden = tbody.children.length > 0;
    } catch (e) {
      v.fail(e, 'Loading repositories');
    } finally {
      more.disabled = false;
    }
  };

  // The search is kept in the address, so Back returns to it.
  const search = () => {
    history.replaceState(null, '', routeHash('repositories', { q: input.value.trim(), upstream: select.value }));
    load(false);
  };

  v.listen(input, 'input', () => {
    if (debounce !== null) v.cancel(debounce);
    debounce = v.after(SEARCH_DEBOUNCE_MS, search);
  });
  v.listen(input, 'keydown', (ev) => {
    if (ev.key !== 'Enter') return;
    if (debounce !== null) v.cancel(debounce);
    search();
  });
  v.listen(select, 'change', search);
  v.listen(more, 'click', () => load(true));

  // The upstream filter lists the configured upstreams.
  (async () => {
    try {
      const ups = await api(API.upstreams, { signal: v.signal });
      if (!v.live) return;
      const keep = select.value || wantUpstream;
      select.replaceChildren(h('option', { value: '' }, 'All upstreams'),
        ...ups.map((u) => h('option', { value: u.name }, u.name)));
      select.value = ups.some((u) => u.name === keep) ? keep : '';
    } catch (e) {
      v.fail(e, 'Loading upstreams');
    }
    if (v.live) load(false);
  })();
}

function repoRow(r) {
  const id = `${r.upstream}/${r.name}`;
  const href = routeHash('repository', { upstream: r.upstream, name: r.name });
  const row = h('tr', { class: 'clickable', 'data-testid': 'repo-row', 'data-repo': id },
    h('td', {}, h('a', { href, 'data-testid': 'repo-link' }, h('span', { class: 'muted' }, `${r.upstream}/`), r.name)),
    h('td', { class: 'num' }, fmtCount(r.tags)),
    h('td', { class: 'num' }, fmtCount(r.manifests)),
    h('td', { class: 'num', 'data-bytes': r.bytes }, fmtBytes(r.bytes)),
    h('td', {}, timeEl(r.last_access, 'never')));
  row.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) return; // the link navigates by itself
    location.hash = href;
  });
  return row;
}

// ---------------------------------------------------------------------------
// One repository

function showRepository(v) {
  const upstream = v.params.get('upstream') || '';
  const name = v.params.get('name') || '';
  const full = `${upstream}/${name}`;
  setText('#repo-title', full);
  document.title = `${full} · wharf`;
  const result = $('#deletion');
  result.hidden = true;
  result.replaceChildren();
  $('#tags tbody').replaceChildren();
  $('#tags-empty').hidden = true;

  const load = async () => {
    let tags = [];
    try {
      tags = await api(API.tags, { query: { upstream, repo: name }, signal: v.signal });
    } catch (e) {
      // 404: nothing of the repository is cached (any more). That is the
      // empty state, not an error.
      if (!(e instanceof ApiError && e.status === 404)) {
        v.fail(e, `Loading the tags of ${full}`);
        return;
      }
    }
    if (!v.live) return;
    const any = Boolean(tags && tags.length > 0);
    $('#tags tbody').replaceChildren(...(tags || []).map((t) => tagRow(v, t, load)));
    $('#tags').hidden = !any;
    $('#tags-empty').hidden = any;
    $('#delete-repo').disabled = !any;
  };

  v.listen($('#delete-repo'), 'click', async (ev) => {
    if (!window.confirm(`Delete the repository ${full} from the cache?\n\n` +
      'Every tag goes; content nothing else uses is removed, and the next pull fetches it from upstream again.')) return;
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const d = await api(API.deleteRepository, { query: { upstream, repo: name }, signal: v.signal });
      if (v.live) showDeletion(`Deleted repository ${full}`, d);
    } catch (e) {
      v.fail(e, `Deleting ${full}`);
    }
    if (v.live) load();
  });

  load();
}

function tagRow(v, t, reload) {
  const copy = h('button', { type: 'button', class: 'quiet small', 'data-testid': 'copy-ref', title: 'Copy the reference' }, 'Copy');
  copy.addEventListener('click', () => copyText(t.reference, copy));
  const del = h('button', { type: 'button', class: 'danger small', 'data-testid': 'delete-tag' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete the tag ${t.reference} from the cache?\n\n` +
      'Content no other tag or manifest uses is removed; the next pull fetches it from upstream again.')) return;
    del.disabled = true;
    try {
      const d = await api(API.deleteTag, { query: { upstream: t.upstream, repo: t.repo, tag: t.name }, signal: v.signal });
      if (v.live) showDeletion(`Deleted tag ${t.reference}`, d);
    } catch (e) {
      v.fail(e, `Deleting ${t.reference}`);
    }
    if (v.live) reload();
  });
  return h('tr', { 'data-testid': 'tag-row', 'data-tag': t.name, 'data-digest': t.digest, title: t.media_type || null },
    h('td', {}, h('code', { 'data-testid': 'tag-reference' }, t.reference), ' ', copy),
    h('td', {}, h('code', { title: t.digest }, shortDigest(t.digest))),
    h('td', { class: 'num', 'data-bytes': t.bytes }, fmtBytes(t.bytes)),
    h('td', {}, timeEl(t.last_access, 'never')),
    h('td', {}, timeEl(t.checked_at)),
    h('td', { class: 'actions' }, del));
}

// copyText puts text on the clipboard. navigator.clipboard exists only in
// secure contexts (https, or http on loopback); elsewhere a selected
// textarea and execCommand do it.
async function copyText(text, button) {
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      ok = true;
    }
  } catch {
    // Permission denied: try the fallback.
  }
  if (!ok) {
    const ta = h('textarea', { readonly: true, class: 'offscreen' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    ta.remove();
  }
  const before = button.textContent;
  button.textContent = ok ? 'Copied' : 'Copy failed';
  setTimeout(() => { button.textContent = before; }, 1500);
}

const KEPT_REASONS = {
  tagged: 'another tag points to it',
  referenced: 'a cached manifest references it',
  in_use: 'in use right now; delete again later',
};

// showDeletion reports what a delete removed and what it kept, and why.
function showDeletion(what, d) {
  const out = $('#deletion');
  out.dataset.bytes = String(d.bytes || 0);
  const kept = d.kept || [];
  fill(out,
    h('p', {}, h('strong', {}, `${what}. `),
      `Removed ${plural(d.tags, 'tag')}, ${plural(d.manifests, 'manifest')} and ${plural(d.blobs, 'blob')}; `,
      h('span', { 'data-testid': 'freed' }, `${fmtBytes(d.bytes)} freed`), '.'),
    kept.length === 0 ? null : h('div', {},
      h('p', {}, `Kept ${fmtCount(kept.length)}:`),
      h('ul', { class: 'kept' }, ...kept.map((k) => h('li', { 'data-testid': 'kept', 'data-reason': k.reason },
        h('code', { title: k.digest }, shortDigest(k.digest)), ` — ${KEPT_REASONS[k.reason] || k.reason}`,
        k.by && k.by.length ? h('span', { class: 'muted' }, ` (${k.by.join(', ')})`) : null)))));
  out.hidden = false;
}

// ---------------------------------------------------------------------------
// Prefetch

function showPrefetch(v) {
  const jobPanel = $('#job');
  const shown = v.params.get('job') || '';
  jobPanel.hidden = true;
  jobPanel.replaceChildren();

  v.listen($('#prefetch-form'), 'submit', async (ev) => {
    ev.preventDefault();
    const refs = $('#prefetch-refs').value.split('\n').map((s) => s.trim()).filter((s) => s && !s.startsWith('#'));
    const platforms = $('#prefetch-platforms').value.split(/[\s,]+/).filter(Boolean);
    const concurrency = parseInt($('#prefetch-concurrency').value, 10);
    const req = { refs };
    if (platforms.length) req.platforms = platforms;
    if (concurrency > 0) req.concurrency = concurrency;
    const submit = ev.submitter || $('#prefetch-form button[type=submit]');
    submit.disabled = true;
    try {
      const job = await api(API.prefetch, { body: req, signal: v.signal });
      if (v.live) location.hash = routeHash('prefetch', { job: job.id });
    } catch (e) {
      v.fail(e, 'Starting the prefetch');
    } finally {
      submit.disabled = false;
    }
  });

  // The list refreshes while any job in it is still running, and when the
  // job shown finishes.
  let jobsTimer = null;
  let jobsSeq = 0; // the latest load; older answers are dropped
  const loadJobs = async () => {
    if (jobsTimer !== null) {
      v.cancel(jobsTimer);
      jobsTimer = null;
    }
    const mine = ++jobsSeq;
    let jobs;
    try {
      jobs = await api(API.prefetchJobs, { signal: v.signal });
    } catch (e) {
      v.fail(e, 'Loading prefetch jobs');
      return;
    }
    if (!v.live || mine !== jobsSeq) return;
    renderJobs(jobs || [], shown);
    if (jobsTimer === null && (jobs || []).some((j) => !TERMINAL.has(j.state))) {
      jobsTimer = v.after(JOBS_REFRESH_MS, loadJobs);
    }
  };
  loadJobs();

  if (!shown) return;
  const poll = async () => {
    let job;
    try {
      job = await api(API.prefetchJob, { path: { id: shown }, signal: v.signal });
    } catch (e) {
      v.fail(e, `Loading prefetch job ${shown}`);
      return;
    }
    if (!v.live) return;
    renderJob(v, job);
    if (TERMINAL.has(job.state)) loadJobs();
    else v.after(JOB_POLL_MS, poll);
  };
  poll();
}

function progressEl(bytes, total, terminal, testid) {
  const p = h('progress', { 'data-testid': testid });
  if (total > 0) {
    p.max = total;
    p.value = Math.min(bytes, total);
  } else if (terminal) {
    p.max = 1;
    p.value = 1;
  } // else: indeterminate until the manifests tell the size
  return p;
}

function stateBadge(state, testid) {
  const kind = { done: 'ok', failed: 'down', canceled: 'unknown' }[state] || 'busy';
  return badge(state, kind, testid);
}

function renderJob(v, job) {
  const panel = $('#job');
  const terminal = TERMINAL.has(job.state);
  panel.dataset.jobId = job.id;
  panel.dataset.state = job.state;

  let cancel = null;
  if (!terminal) {
    cancel = h('button', { type: 'button', class: 'danger small', 'data-testid': 'prefetch-cancel' }, 'Cancel');
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        const j = await api(API.cancelPrefetch, { path: { id: job.id }, signal: v.signal });
        if (v.live) renderJob(v, j);
      } catch (e) {
        v.fail(e, `Canceling prefetch job ${job.id}`);
      }
    });
  }

  const items = (job.items || []).map((it) => {
    const itTerminal = TERMINAL.has(it.state);
    return h('li', { 'data-testid': 'prefetch-item', 'data-ref': it.ref, 'data-state': it.state },
      h('div', { class: 'item-head' },
        h('code', { title: it.reference || it.ref }, it.reference || it.ref), ' ', stateBadge(it.state, 'item-state')),
      progressEl(it.bytes, it.total_bytes, itTerminal, 'item-progress'),
      h('div', { class: 'muted small' },
        `${fmtBytes(it.bytes)} of ${it.total_bytes > 0 ? fmtBytes(it.total_bytes) : '…'}`,
        it.cached ? `, ${fmtBytes(it.cached)} already cached` : '',
        it.digest ? ` · ${shortDigest(it.digest)}` : ''),
      it.error ? h('div', { class: 'error small', 'data-testid': 'item-error' }, it.error) : null);
  });

  panel.replaceChildren(
    h('div', { class: 'card-head' },
      h('h2', {}, 'Job ', h('code', {}, job.id), ' ', stateBadge(job.state, 'job-state')),
      cancel),
    progressEl(job.bytes, job.total_bytes, terminal, 'job-progress'),
    h('p', { class: 'muted small' },
      `${fmtBytes(job.bytes)} of ${job.total_bytes > 0 ? fmtBytes(job.total_bytes) : '…'}; `,
      `${fmtCount(job.done)} done, ${fmtCount(job.failed)} failed of ${fmtCount((job.items || []).length)}; started `,
      timeEl(job.created),
      job.finished ? [', finished ', timeEl(job.finished)] : null),
    h('ul', { class: 'items' }, ...items));
  panel.hidden = false;
}

function renderJobs(jobs, shown) {
  const rows = jobs.map((j) => {
    const href = routeHash('prefetch', { job: j.id });
    const row = h('tr', {
      class: j.id === shown ? 'clickable selected' : 'clickable',
      'data-testid': 'job-row',
      'data-job-id': j.id,
      'data-state': j.state,
    },
    h('td', {}, h('a', { href }, h('code', {}, j.id))),
    h('td', {}, stateBadge(j.state, 'job-row-state')),
    h('td', {}, timeEl(j.created)),
    h('td', { class: 'num' }, `${fmtCount(j.done)}/${fmtCount((j.items || []).length)}`),
    h('td', {}, progressEl(j.bytes, j.total_bytes, TERMINAL.has(j.state), 'job-row-progress')));
    row.addEventListener('click', (ev) => {
      if (!ev.target.closest('a')) location.hash = href;
    });
    return row;
  });
  $('#jobs tbody').replaceChildren(...rows);
  $('#jobs').hidden = jobs.length === 0;
  $('#jobs-empty').hidden = jobs.length > 0;
}

// ---------------------------------------------------------------------------
// Start

function init() {
  $('#banner-close').addEventListener('click', clearError);
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#token-input');
    storeToken(input.value.trim());
    input.value = '';
    $('#auth').hidden = true;
    render();
  });
  window.addEventListener('hashchange', render);
  render();
}

init();

// The admin pages' two static assets, kept in the code so the image needs no build step and serves nothing it did not
// ship (air-gapped): the style sheet, and the one script, which follows a run's server-sent events
// (GET /v1/jobs/{id}/events, authorized by the session cookie) to move the progress bar and show rate and ETA. The
// pages work without the script: tables, forms and confirmations are plain HTML. Served under a content hash, so
// they can be cached for good; the Content-Security-Policy allows scripts and styles from this server only.
import { createHash } from 'node:crypto';

const STYLE = String.raw`
:root { --fg: #1a1a1a; --muted: #4a4a4a; --line: #c8c8c8; --bg: #ffffff; --panel: #f4f5f7; --link: #0b4fa8;
  --ok: #1e6b2e; --warn: #8a5300; --bad: #a4161a; --focus: #ffbf47; font-family: system-ui, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); line-height: 1.45; font-size: 15px; }
a { color: var(--link); }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus { outline: 3px solid var(--focus); outline-offset: 1px; }
header.top { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .6rem 1.2rem; background: #14213d; color: #fff; }
header.top a { color: #fff; }
header.top nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
header.top .who { margin-left: auto; display: flex; gap: .6rem; align-items: center; }
header.top .who button { background: transparent; color: #fff; border: 1px solid #fff; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: .5rem; background: #fff; color: var(--link); padding: .3rem; }
main { padding: 1rem 1.2rem 3rem; max-width: 1400px; }
h1 { font-size: 1.4rem; margin: .3rem 0 1rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .6rem; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
.counts { display: flex; flex-wrap: wrap; gap: .6rem; list-style: none; padding: 0; margin: 0 0 1rem; }
.counts a { display: block; padding: .4rem .8rem; border: 1px solid var(--line); border-radius: 4px; text-decoration: none; background: var(--panel); }
.counts strong { font-size: 1.2rem; margin-right: .3rem; color: var(--fg); }
form.filters { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-end; margin-bottom: 1rem; padding: .8rem; background: var(--panel); }
form.filters label, form.stack label { display: flex; flex-direction: column; font-size: .85rem; gap: .2rem; }
form.stack { display: flex; flex-direction: column; gap: .8rem; max-width: 40rem; }
input, select, textarea, button { font: inherit; padding: .35rem .5rem; border: 1px solid #767676; border-radius: 3px; }
textarea { min-height: 5rem; }
button, .button { background: #0b4fa8; color: #fff; border: 1px solid #0b4fa8; cursor: pointer; text-decoration: none; display: inline-block; padding: .35rem .8rem; border-radius: 3px; }
button.danger, .button.danger { background: var(--bad); border-color: var(--bad); }
.button.secondary { background: #fff; color: var(--link); }
.actions { display: flex; flex-wrap: wrap; gap: .6rem; margin: .8rem 0; padding: 0; list-style: none; }
.state { display: inline-block; padding: .05rem .45rem; border-radius: 3px; font-size: .85rem; font-weight: 600; border: 1px solid currentColor; }
.state-succeeded { color: var(--ok); } .state-partial, .state-review_ready { color: var(--warn); }
.state-failed, .state-dead { color: var(--bad); } .state-queued, .state-running, .state-canceled { color: var(--muted); }
dl.record { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dl.record dt { font-weight: 600; color: var(--muted); } dl.record dd { margin: 0; overflow-wrap: anywhere; }
pre { background: var(--panel); padding: .6rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85rem; }
.notice { padding: .6rem .8rem; border-left: 4px solid var(--ok); background: #edf7ee; margin-bottom: 1rem; }
.error-box { padding: .6rem .8rem; border-left: 4px solid var(--bad); background: #fbeaea; margin-bottom: 1rem; }
.live { padding: .8rem; background: var(--panel); border: 1px solid var(--line); margin: .8rem 0; }
.live progress { width: 100%; height: 1.2rem; }
.live .figures { display: flex; flex-wrap: wrap; gap: 1.2rem; margin-top: .4rem; }
.muted { color: var(--muted); }
table.summary { width: auto; min-width: 22rem; }
dl.values { display: flex; flex-wrap: wrap; gap: .2rem .9rem; margin: 0; font-size: .85rem; }
dl.values div { display: flex; gap: .3rem; } dl.values dt { color: var(--muted); } dl.values dt::after { content: ':'; } dl.values dd { margin: 0; overflow-wrap: anywhere; }
dl.values .named { background: #fff4d6; outline: 1px solid var(--warn); padding: 0 .2rem; }
.pager { display: flex; gap: 1rem; margin: .8rem 0; }
button:disabled { opacity: .5; cursor: not-allowed; }
bdi.value { unicode-bidi: isolate; } .control { color: var(--bad); font-size: .75rem; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 1rem 2rem; }
`;

const SCRIPT = String.raw`// bulk-import admin: live progress of a run (server-sent events), and its page refreshed in place when its state changes.
(function () {
  'use strict';
  var TERMINAL = ['succeeded', 'partial', 'failed', 'dead', 'canceled'];
  var source = null;
  var jobId = null;
  var shownState = null;
  var samples = [];
  var retryMs = 1000;
  var retryTimer = null;
  var refreshing = false;
  var refreshAgain = false;

  function finite(value) { return typeof value === 'number' && isFinite(value) ? value : undefined; }
  function text(selector, value) {
    var node = document.querySelector(selector);
    if (node) node.textContent = value;
  }
  function duration(seconds) {
    seconds = Math.round(seconds);
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
  }
  function setStatus(value) { text('[data-live-status]', value); }
  // Said by a live region outside <main> (the refresh replaces <main>, and a region replaced is not read out).
  function announce(value) { text('[data-live-announce]', value); }

  // The page's address without the notice of the action that led here (?done=…): refreshed later, the run has moved on.
  function pageUrl() {
    var url = new URL(location.href);
    url.searchParams.delete('done');
    return url.toString();
  }

  // What had the keyboard focus inside <main>, found again in the new one: same id, or same link or button text.
  function focusKey() {
    var active = document.activeElement;
    if (!active || active === document.body || !document.querySelector('main').contains(active)) return null;
    return { id: active.id, tag: active.tagName, href: active.getAttribute('href'), label: active.textContent };
  }
  function restoreFocus(key, main) {
    if (!key) return;
    var found = key.id ? document.getElementById(key.id) : null;
    if (!found) {
      var nodes = main.querySelectorAll(key.tag);
      for (var i = 0; i < nodes.length && !found; i++) {
        if (nodes[i].getAttribute('href') === key.href && nodes[i].textContent === key.label) found = nodes[i];
      }
    }
    // Gone with the old state (a Cancel link of a run that ended): the page's heading, not the top of the page.
    if (!found) found = main.querySelector('h1');
    if (found) {
      if (!found.hasAttribute('tabindex') && found.tagName === 'H1') found.setAttribute('tabindex', '-1');
      found.focus();
    }
  }

  // The same figures the API computes (worker/http/views.ts): done/total or bytes, the handler's rate or the one
  // measured between events, and the handler's ETA or the remaining work over the rate.
  function figures(progress, state) {
    var done = finite(progress.done !== undefined ? progress.done : progress.itemsDone);
    var total = finite(progress.total !== undefined ? progress.total : progress.itemsTotal);
    var bytesDone = finite(progress.bytesDone), bytesTotal = finite(progress.bytesTotal);
    var percent;
    if (bytesDone !== undefined && bytesTotal !== undefined && bytesTotal > 0) percent = Math.min(100, 100 * bytesDone / bytesTotal);
    else if (done !== undefined && total !== undefined && total > 0) percent = Math.min(100, 100 * done / total);
    var now = Date.now();
    if (done !== undefined) {
      if (samples.length && done < samples[samples.length - 1].done) samples = [];
      samples.push({ at: now, done: done });
      while (samples.length > 2 && now - samples[0].at > 30000) samples.shift();
    }
    var first = samples[0], last = samples[samples.length - 1];
    var measured = first && last && last.at > first.at ? (last.done - first.done) * 1000 / (last.at - first.at) : undefined;
    var rate = finite(progress.rate);
    if (rate === undefined) rate = finite(progress.filesPerSecond);
    if (rate === undefined) rate = finite(progress.rowsPerSecond);
    if (rate === undefined) rate = measured;
    var eta = finite(progress.etaSeconds);
    if (eta === undefined && done !== undefined && total !== undefined && rate) eta = Math.max(0, total - done) / rate;
    if (state !== 'running') eta = undefined;
    return { done: done, total: total, percent: percent, rate: rate, eta: eta, phase: progress.phase, bytesPerSecond: finite(progress.bytesPerSecond) };
  }

  function showProgress(progress, state) {
    var bar = document.querySelector('[data-live-bar]');
    if (!bar || !progress) return;
    var f = figures(progress, state);
    if (f.percent !== undefined) { bar.max = 100; bar.value = f.percent; } else if (TERMINAL.indexOf(state) === -1) bar.removeAttribute('value');
    text('[data-live-percent]', f.percent !== undefined ? (Math.round(f.percent * 10) / 10) + ' %' : '—');
    text('[data-live-done]', f.done !== undefined ? f.done.toLocaleString('en') + (f.total !== undefined ? ' of ' + f.total.toLocaleString('en') : '') : '—');
    var rate = f.rate !== undefined ? (Math.round(f.rate * 10) / 10).toLocaleString('en') + ' /s' : '—';
    if (f.bytesPerSecond !== undefined) rate += ' (' + (f.bytesPerSecond / 1048576).toFixed(1) + ' MiB/s)';
    text('[data-live-rate]', rate);
    text('[data-live-eta]', f.eta !== undefined ? duration(f.eta) : '—');
    if (typeof f.phase === 'string') text('[data-live-phase]', f.phase);
  }

  function showState(state) {
    var node = document.querySelector('[data-run-state]');
    if (node) { node.textContent = state; node.className = 'state state-' + state; }
  }

  // A new state can change the page (result, actions, last error): fetch it again and put its main part in place.
  function refresh() {
    // A state change heard while a refresh is under way: that page may have been drawn before it, so one more after.
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    refreshAgain = false;
    var url = pageUrl();
    if (url !== location.href) history.replaceState(history.state, '', url);
    fetch(url, { credentials: 'same-origin', headers: { accept: 'text/html' }, redirect: 'manual' })
      .then(function (response) {
        if (response.type === 'opaqueredirect') { sessionEnded(); return Promise.reject(null); }
        return response.ok ? response.text() : Promise.reject(new Error('HTTP ' + response.status));
      })
      .then(function (body) {
        var next = new DOMParser().parseFromString(body, 'text/html').querySelector('main');
        var current = document.querySelector('main');
        var focused = focusKey();
        if (next && current) { current.replaceWith(next); restoreFocus(focused, next); }
        refreshing = false;
        bind();
        if (shownState) announce('Run ' + jobId + ' is now ' + shownState + '.');
        if (refreshAgain) refresh();
      })
      .catch(function (error) { refreshing = false; refreshAgain = false; if (error) setStatus('could not refresh the page; reload it'); });
  }

  // A stream the server ended for good: the session may be over (signed out, expired, its key revoked), when every
  // reconnect would be refused. A page of this session asked without following its redirect tells: sent to the
  // sign-in form, the page says so and stops trying; else the stream is opened again.
  function sessionEnded() {
    if (source) { source.close(); source = null; }
    clearTimeout(retryTimer);
    var status = document.querySelector('[data-live-status]');
    if (!status) return;
    status.textContent = 'stopped: your session ended. ';
    var link = document.createElement('a');
    link.href = '/admin/sign-in?ended=1&next=' + encodeURIComponent(location.pathname + location.search);
    link.textContent = 'Sign in again';
    status.appendChild(link);
  }
  function reconnectOrStop() {
    fetch(pageUrl(), { credentials: 'same-origin', headers: { accept: 'text/html' }, redirect: 'manual' })
      .then(function (response) {
        if (response.type === 'opaqueredirect' || response.status === 401) sessionEnded();
        else connect();
      })
      .catch(function () { connect(); });
  }

  function onData(type, data) {
    var progress = type === 'snapshot' ? (data.progress ? data.progress.details : null) : data.progress;
    if (data.state && data.state !== shownState) {
      shownState = data.state;
      showState(data.state);
      showProgress(progress, data.state);
      refresh();
      return;
    }
    showProgress(progress, data.state);
  }

  function connect() {
    if (source) source.close();
    source = new EventSource('/v1/jobs/' + encodeURIComponent(jobId) + '/events');
    source.addEventListener('open', function () { retryMs = 1000; setStatus('live'); });
    ['snapshot', 'state', 'progress'].forEach(function (type) {
      source.addEventListener(type, function (event) {
        try { onData(type, JSON.parse(event.data)); } catch (error) { /* a malformed event: wait for the next */ }
      });
    });
    source.addEventListener('error', function () {
      if (source.readyState === EventSource.CONNECTING) { setStatus('reconnecting…'); return; }
      // The server refused or went away for good: start again (a new stream begins with a snapshot).
      source.close();
      setStatus('reconnecting…');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(reconnectOrStop, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    });
  }

  function bind() {
    var root = document.querySelector('[data-live-run]');
    if (!root) { if (source) { source.close(); source = null; } return; }
    shownState = root.getAttribute('data-state');
    var id = root.getAttribute('data-live-run');
    if (TERMINAL.indexOf(shownState) !== -1) { if (source) { source.close(); source = null; } setStatus('finished'); return; }
    if (id !== jobId || !source) { jobId = id; samples = []; connect(); } else setStatus('live');
  }

  bind();
})();
`;

export interface Asset {
  path: string;
  type: string;
  body: string;
}

function asset(name: string, extension: string, type: string, body: string): Asset {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 12);
  return { path: `/admin/assets/${name}.${hash}.${extension}`, type, body };
}

export const ADMIN_STYLE = asset('admin', 'css', 'text/css; charset=utf-8', STYLE);
/** The pages' icon, so a browser asks for it here (public, cached) and not for /favicon.ico (a 401 on every page). */
export const ADMIN_ICON = asset(
  'icon',
  'svg',
  'image/svg+xml',
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#14213d"/><path d="M4 4h8v2H4zm0 3h8v2H4zm0 3h5v2H4z" fill="#ffbf47"/></svg>',
);
export const ADMIN_SCRIPT = asset('admin', 'js', 'text/javascript; charset=utf-8', SCRIPT);

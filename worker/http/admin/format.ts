// How the admin pages write times, durations, sizes and counts (UTC throughout, as the logs and the CLI do).
import { formatBytes as formatByteCount } from '../../cli/output.js';
import { html, type Html } from './html.js';

export function timeCell(date: Date | null | undefined): Html | string {
  if (!date) return '—';
  const iso = date.toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 19).replace('T', ' ')}</time>`;
}

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—';
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = whole % 60;
  return `${h ? `${h}h ` : ''}${h || m ? `${m}m ` : ''}${s}s`;
}

/** Started → finished, or → now while the run is unfinished. */
export function runDuration(startedAt: Date | null, finishedAt: Date | null, now = Date.now()): string {
  if (!startedAt) return '—';
  return formatDuration(((finishedAt?.getTime() ?? now) - startedAt.getTime()) / 1000);
}

/** Bytes as the CLI shows them (1.5 MiB); a dash for a value that is not a number. */
export function formatBytes(bytes: unknown): string {
  const value = typeof bytes === 'string' ? Number(bytes) : bytes;
  return typeof value === 'number' && Number.isFinite(value) ? formatByteCount(value) : '—';
}

export function formatCount(value: unknown): string {
  const number = typeof value === 'string' ? Number(value) : value;
  return typeof number === 'number' && Number.isFinite(number) ? number.toLocaleString('en') : '—';
}

/**
 * Bidirectional formatting controls (embeddings, overrides, isolates, marks): in a value from a file they would make
 * the page show something the file does not hold (U+202E + "abc" reads "cba").
 */
const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

/** Controls of one value shown as code points; the rest are counted (a row of them would make a page dozens of times its size). */
const SHOWN_CONTROLS = 16;

/**
 * Text from a file (a CSV value, a reason quoting one) as the page shows it: isolated from the text around it (`<bdi>`),
 * with each bidirectional control shown as its code point instead of acting on the text — the first SHOWN_CONTROLS of
 * them; any more are left out and counted.
 */
export function fileText(value: string): Html {
  const parts: Array<Html | string> = [];
  let from = 0;
  let controls = 0;
  for (const match of value.matchAll(BIDI_CONTROLS)) {
    parts.push(value.slice(from, match.index));
    from = match.index + match[0].length;
    controls += 1;
    if (controls > SHOWN_CONTROLS) continue;
    parts.push(html`<span class="control" title="a bidirectional formatting character">[U+${match[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]</span>`);
  }
  parts.push(value.slice(from));
  const hidden = controls - SHOWN_CONTROLS;
  return html`<bdi class="value">${parts}</bdi>${hidden > 0 ? html`<span class="control"> (${hidden} more bidirectional characters left out)</span>` : ''}`;
}

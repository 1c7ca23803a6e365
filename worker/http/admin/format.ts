// How the admin pages write times, durations, sizes and counts (UTC throughout, as the logs and the CLI do).
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

export function formatBytes(bytes: unknown): string {
  const value = typeof bytes === 'string' ? Number(bytes) : bytes;
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function formatCount(value: unknown): string {
  const number = typeof value === 'string' ? Number(value) : value;
  return typeof number === 'number' && Number.isFinite(number) ? number.toLocaleString('en') : '—';
}

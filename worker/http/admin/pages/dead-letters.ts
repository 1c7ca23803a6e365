// GET /admin/dead: dead runs not resolved (GET /v1/dead), with their reasons, newest first, keyset-paged; replay or
// resolve one, replay all (of a kind), purge those dead longer than a given time. Operators only, as in the API.
import { listDeadJobs, purgeDead } from '../../../actions/run-actions.js';
import { parseDurationMs } from '../../../cli/parse.js';
import { JOB_KIND_PATTERN, type JobRow } from '../../../queue/types.js';
import { decodeCursor, encodeCursor } from '../../cursor.js';
import { ApiError } from '../../errors.js';
import type { ApiDependencies } from '../../server.js';
import { timeCell } from '../format.js';
import { html, withQuery, type Html } from '../html.js';
import { csrfField, errorBox, page, type Viewer } from '../layout.js';

export const DEAD_PER_PAGE = 50;
/** How many of the runs a purge would delete its confirmation page lists. */
const PURGE_PREVIEW = 50;


/** The kind filter of the dead-letter forms ('' = every kind). */
export function readKind(value: unknown): string {
  const kind = typeof value === 'string' ? value.trim() : '';
  if (kind && !JOB_KIND_PATTERN.test(kind)) throw new ApiError(400, 'INVALID_REQUEST', 'a kind is lower-case letters, digits and "-"', 'kind');
  return kind;
}

/** "7d", "12h", "30m": how long runs must have been dead to be purged. */
export function readOlderThan(value: unknown): { text: string; ms: number } {
  const text = typeof value === 'string' ? value.trim() : '';
  try {
    return { text, ms: parseDurationMs(text) };
  } catch (error) {
    throw new ApiError(400, 'INVALID_REQUEST', `older than: ${(error as Error).message} (e.g. 30m, 12h, 7d)`, 'olderThan');
  }
}

/** The purge confirmation's bound (an ISO time the page wrote): required, so a purge goes by what a page listed. */
export function readDiedNoLaterThan(value: unknown): Date {
  const text = typeof value === 'string' ? value.trim() : '';
  const at = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/.test(text) ? new Date(text) : new Date(NaN);
  if (Number.isNaN(at.getTime())) throw new ApiError(400, 'INVALID_REQUEST', 'diedNoLaterThan: not an ISO time', 'diedNoLaterThan');
  return at;
}

const kindSelect = (deps: ApiDependencies, selected: string, id: string) =>
  html`<select id="${id}" name="kind"><option value="">every kind</option>${deps.registry
    .kinds()
    .map((kind) => html`<option value="${kind}"${selected === kind ? html` selected` : ''}>${kind}</option>`)}</select>`;

function deadRow(job: JobRow): Html {
  return html`<tr>
    <td class="num"><a href="/admin/runs/${job.id}">${job.id}</a></td>
    <td>${job.kind}</td>
    <td>${job.tenantId ?? '—'}</td>
    <td>${timeCell(job.finishedAt)}</td>
    <td class="num">${job.attempts} / ${job.maxAttempts}</td>
    <td><code>${job.lastError?.code ?? '—'}</code></td>
    <td>${job.lastError?.message ?? ''}</td>
    <td><a href="/admin/runs/${job.id}/replay">Replay…</a> <a href="/admin/runs/${job.id}/resolve">Resolve…</a></td>
  </tr>`;
}

export async function deadLettersPage(
  deps: ApiDependencies,
  viewer: Viewer,
  query: { kind?: string; cursor?: string; done?: string; skipped?: string },
): Promise<Html> {
  let problem: string | null = null;
  let kind = '';
  try {
    kind = readKind(query.kind);
  } catch (error) {
    problem = (error as Error).message;
  }
  let before: { finishedAt: Date; id: number } | undefined;
  if (query.cursor) {
    const position = decodeCursor(query.cursor, { at: 'timestamp', id: 'integer' });
    before = { finishedAt: position.at as Date, id: position.id as number };
  }
  const jobs = await listDeadJobs(deps.pool, { kinds: kind ? [kind] : undefined, limit: DEAD_PER_PAGE, before });
  const last = jobs[jobs.length - 1];
  // (A count from the redirect after a replay; only digits are shown.)
  const skipped = /^[1-9]\d{0,6}$/.test(query.skipped ?? '') ? Number(query.skipped) : 0;
  const leftDead = skipped > 0 ? ` ${skipped} stayed dead: another run of the same dedupe key is active or was replayed instead (they are listed below).` : '';
  const notice =
    query.done === 'replay'
      ? `Replayed: the runs are queued again.${leftDead}`
      : query.done === 'purge'
        ? 'Purged: the history of each run keeps a purged entry.'
        : null;
  const body = html`<h1>Dead letters</h1>
${notice ? html`<div class="notice" role="status">${notice}</div>` : ''}
${errorBox(problem)}
<p>Runs that used up their attempts or outlasted an outage budget, not yet resolved. Replay runs one again as the same run
record; Resolve marks it handled with a note; Purge deletes runs dead for longer than a given time.</p>
<form class="filters" method="get" action="/admin/dead" aria-label="Filter dead runs">
  <label for="dead-kind">Kind ${kindSelect(deps, kind, 'dead-kind')}</label>
  <button type="submit">Filter</button>
</form>
<div class="columns">
<form class="filters" method="get" action="/admin/dead/replay" aria-label="Replay all dead runs">
  <input type="hidden" name="kind" value="${kind}">
  <span>Replay every dead run${kind ? html` of kind <strong>${kind}</strong>` : ''}</span>
  <button type="submit">Replay all…</button>
</form>
<form class="filters" method="get" action="/admin/dead/purge" aria-label="Purge old dead runs">
  <input type="hidden" name="kind" value="${kind}">
  <label for="older-than">Dead for longer than <input id="older-than" name="olderThan" value="7d" size="6" required pattern="\\s*\\d+\\s*(ms|s|m|h|d)?\\s*"></label>
  <button type="submit" class="danger">Purge…</button>
</form>
</div>
<div class="table-wrap"><table>
  <caption class="muted">${jobs.length ? `${jobs.length} dead run(s) on this page, most recently dead first` : 'No dead runs.'}</caption>
  <thead><tr><th scope="col" class="num">Run</th><th scope="col">Kind</th><th scope="col">Tenant</th><th scope="col">Died</th><th scope="col" class="num">Attempts</th><th scope="col">Code</th><th scope="col">Reason</th><th scope="col">Actions</th></tr></thead>
  <tbody>${jobs.map(deadRow)}</tbody>
</table></div>
<nav class="pager" aria-label="Pages">
  ${query.cursor ? html`<a href="${withQuery('/admin/dead', { kind })}">First page</a>` : ''}
  ${jobs.length === DEAD_PER_PAGE && last?.finishedAt ? html`<a rel="next" href="${withQuery('/admin/dead', { kind, cursor: encodeCursor({ at: last.finishedAt.toISOString(), id: last.id }) })}">Next page</a>` : ''}
</nav>`;
  return page({ title: 'Dead letters', viewer, body, section: 'dead' });
}

export function confirmReplayAllPage(viewer: Viewer, kind: string, error?: string): Html {
  const body = html`<h1>Replay all dead runs${kind ? ` of kind ${kind}` : ''}?</h1>
${errorBox(error)}
<p>Every dead run${kind ? html` of kind <strong>${kind}</strong>` : ''} that is not resolved goes back to the queue as the same run record.</p>
<form class="stack" method="post" action="/admin/dead/replay">
  ${csrfField(viewer)}
  <input type="hidden" name="kind" value="${kind}">
  <label for="note">Note (optional, kept in each run's history; the runs' tenants read it too)</label>
  <textarea id="note" name="note" maxlength="2000"></textarea>
  <label><span><input type="checkbox" name="resetAttempts" value="true"> Count attempts from zero again</span></label>
  <div class="actions"><button type="submit">Confirm: replay all${kind ? ` ${kind}` : ''} dead runs</button><a class="button secondary" href="${withQuery('/admin/dead', { kind })}">Back</a></div>
</form>`;
  return page({ title: 'Replay dead runs', viewer, body, section: 'dead' });
}

/** The latest death among the runs a purge page lists: the confirmation purges those, not runs that died since. */
function latestDeath(runs: ReadonlyArray<{ finishedAt: Date }>): Date {
  // A loop, not Math.max(...spread): a purge may list hundreds of thousands of runs (too many arguments for a call).
  let latest = 0;
  for (const run of runs) latest = Math.max(latest, run.finishedAt.getTime());
  return new Date(latest);
}

export async function confirmPurgePage(deps: ApiDependencies, viewer: Viewer, kind: string, olderThan: { text: string; ms: number }): Promise<Html> {
  const preview = await purgeDead(deps.pool, { name: viewer.key.name, tenantId: null }, { olderThanMs: olderThan.ms, kinds: kind ? [kind] : undefined, dryRun: true });
  const body = html`<h1>Purge dead runs?</h1>
<p><strong>${preview.length}</strong> dead run(s)${kind ? html` of kind <strong>${kind}</strong>` : ''} died more than ${olderThan.text} ago and would be deleted with their item records. Each run's history keeps a purged entry.</p>
${preview.length ? html`<ul>${preview.slice(0, PURGE_PREVIEW).map((job) => html`<li>run ${job.id} (${job.kind}${job.tenantId ? `, ${job.tenantId}` : ''}), dead since ${timeCell(job.finishedAt)}</li>`)}</ul>` : ''}
<form class="stack" method="post" action="/admin/dead/purge">
  ${csrfField(viewer)}
  <input type="hidden" name="kind" value="${kind}">
  <input type="hidden" name="olderThan" value="${olderThan.text}">
  ${preview.length ? html`<input type="hidden" name="diedNoLaterThan" value="${latestDeath(preview).toISOString()}">` : ''}
  <label for="note">Note (optional, kept in each run's history)</label>
  <textarea id="note" name="note" maxlength="2000"></textarea>
  <div class="actions"><button type="submit" class="danger"${preview.length ? '' : html` disabled`}>Confirm: purge</button><a class="button secondary" href="${withQuery('/admin/dead', { kind })}">Back</a></div>
</form>`;
  return page({ title: 'Purge dead runs', viewer, body, section: 'dead' });
}

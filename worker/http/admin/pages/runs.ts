// GET /admin/runs: the runs table (newest first, keyset-paged by id like GET /v1/jobs), its filters, and the counts
// per state at the top. A tenant's session sees its own tenant only, exactly as its key does in the API.
import { listJobsPage, type JobSummaryRow } from '../../../queue/operator.js';
import { countJobsByState } from '../../../queue/stats.js';
import { JOB_KIND_PATTERN, JOB_STATES, type JobState } from '../../../queue/types.js';
import type { ApiDependencies } from '../../server.js';
import { lastErrorView, progressView } from '../../views.js';
import { formatCount, runDuration, timeCell } from '../format.js';
import { html, withQuery, type Html } from '../html.js';
import { errorBox, isOperator, page, stateBadge, type Viewer } from '../layout.js';

export const PAGE_SIZE = 50;
/** The states whose counts head the page: what needs attention or is under way. */
const COUNTED_STATES: JobState[] = ['queued', 'running', 'review_ready', 'dead', 'partial'];
/** `<input type="datetime-local">` sends minutes (seconds when given); read as UTC. */
const LOCAL_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/;

export interface RunsQuery {
  state?: string | string[];
  kind?: string;
  tenant?: string;
  since?: string;
  until?: string;
  before?: string;
}

interface Filters {
  states: JobState[];
  kind: string;
  tenant: string;
  since: string;
  until: string;
  beforeId: number | undefined;
}

function readFilters(query: RunsQuery): { filters: Filters; problems: string[] } {
  const problems: string[] = [];
  const states = [query.state ?? []].flat().filter((state) => state !== '');
  const known = states.filter((state): state is JobState => (JOB_STATES as readonly string[]).includes(state));
  if (known.length !== states.length) problems.push(`unknown state: ${states.filter((state) => !known.includes(state as JobState)).join(', ')}`);
  let kind = (query.kind ?? '').trim();
  if (kind && !JOB_KIND_PATTERN.test(kind)) {
    problems.push('a kind is lower-case letters, digits and "-"');
    kind = '';
  }
  const time = (value: string | undefined, name: string) => {
    const text = (value ?? '').trim();
    if (text && !(LOCAL_TIME.test(text) && Number.isFinite(Date.parse(`${text}Z`)))) {
      problems.push(`${name} is not a date and time (YYYY-MM-DDTHH:MM, UTC)`);
      return '';
    }
    return text;
  };
  const before = (query.before ?? '').trim();
  const beforeId = /^\d{1,15}$/.test(before) ? Number(before) : undefined;
  return {
    filters: { states: known, kind, tenant: (query.tenant ?? '').trim().slice(0, 128), since: time(query.since, 'from'), until: time(query.until, 'to'), beforeId },
    problems,
  };
}

const filterQuery = (filters: Filters) => ({
  kind: filters.kind,
  tenant: filters.tenant,
  since: filters.since,
  until: filters.until,
});

function runsLink(filters: Filters, extra: Record<string, string | number | undefined> = {}): string {
  const params = new URLSearchParams();
  for (const state of filters.states) params.append('state', state);
  for (const [name, value] of Object.entries({ ...filterQuery(filters), ...extra })) {
    if (value !== undefined && value !== '') params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `/admin/runs?${text}` : '/admin/runs';
}

function progressCell(job: JobSummaryRow): Html | string {
  const view = progressView(job);
  if (!view) return '—';
  const counts = view.done !== null ? `${formatCount(view.done)}${view.total !== null ? ` / ${formatCount(view.total)}` : ''}` : '';
  if (view.percent === null) return counts || '—';
  return html`<progress max="100" value="${view.percent}" aria-label="run ${job.id} progress">${view.percent} %</progress> ${view.percent} %<br><span class="muted">${counts}</span>`;
}

function runRow(job: JobSummaryRow, operator: boolean): Html {
  const error = lastErrorView(job.lastError, operator);
  return html`<tr>
    <td class="num"><a href="/admin/runs/${job.id}">${job.id}</a></td>
    <td>${stateBadge(job.state)}</td>
    <td>${job.kind}</td>
    <td>${job.tenantId ?? '—'}</td>
    <td>${timeCell(job.startedAt)}</td>
    <td>${timeCell(job.finishedAt)}</td>
    <td class="num">${runDuration(job.startedAt, job.finishedAt)}</td>
    <td>${progressCell(job)}</td>
    <td class="num">${job.attempts} / ${job.maxAttempts}</td>
    <td>${error ? html`<span title="${error.message}">${error.code}</span>` : ''}</td>
  </tr>`;
}

export async function runsPage(deps: ApiDependencies, viewer: Viewer, query: RunsQuery): Promise<Html> {
  const { filters, problems } = readFilters(query);
  const scope = isOperator(viewer) ? null : viewer.key.tenantId;
  // A tenant filtering on another tenant sees nothing, as in the API.
  const foreign = scope !== null && filters.tenant !== '' && filters.tenant !== scope;
  const [jobs, counts] = await Promise.all([
    foreign
      ? Promise.resolve([])
      : listJobsPage(deps.pool, {
          states: filters.states.length ? filters.states : undefined,
          kinds: filters.kind ? [filters.kind] : undefined,
          tenantId: scope ?? (filters.tenant || null),
          since: filters.since ? new Date(`${filters.since}Z`) : undefined,
          until: filters.until ? new Date(`${filters.until}Z`) : undefined,
          beforeId: filters.beforeId,
          limit: PAGE_SIZE,
        }),
    countJobsByState(deps.pool, scope),
  ]);
  const last = jobs[jobs.length - 1];
  const kinds = deps.registry.kinds();
  const body = html`
<h1>Runs</h1>
<ul class="counts" aria-label="Runs per state">
  ${COUNTED_STATES.map((state) => html`<li><a href="${withQuery('/admin/runs', { state })}"><strong data-count="${state}">${formatCount(counts.get(state) ?? 0)}</strong> ${state}</a></li>`)}
</ul>
${errorBox(problems.join('; '))}
<form class="filters" method="get" action="/admin/runs" role="search" aria-label="Filter runs">
  <label>State
    <select name="state" multiple size="3">
      ${JOB_STATES.map((state) => html`<option value="${state}"${filters.states.includes(state) ? html` selected` : ''}>${state}</option>`)}
    </select>
  </label>
  <label>Kind
    <select name="kind">
      <option value="">any</option>
      ${kinds.map((kind) => html`<option value="${kind}"${filters.kind === kind ? html` selected` : ''}>${kind}</option>`)}
    </select>
  </label>
  ${scope === null ? html`<label>Tenant <input name="tenant" value="${filters.tenant}" maxlength="128" autocomplete="off"></label>` : ''}
  <label>Created from (UTC) <input type="datetime-local" name="since" value="${filters.since}"></label>
  <label>Created before (UTC) <input type="datetime-local" name="until" value="${filters.until}"></label>
  <button type="submit">Filter</button>
  <a class="button secondary" href="/admin/runs">Clear</a>
</form>
<div class="table-wrap">
<table>
  <caption class="muted">${jobs.length === 0 ? 'No runs match.' : `Runs ${jobs[0]!.id} to ${last!.id}, newest first`}</caption>
  <thead><tr>
    <th scope="col" class="num">Run</th><th scope="col">State</th><th scope="col">Kind</th><th scope="col">Tenant</th>
    <th scope="col">Started</th><th scope="col">Finished</th><th scope="col" class="num">Duration</th><th scope="col">Progress</th>
    <th scope="col" class="num">Attempts</th><th scope="col">Last error</th>
  </tr></thead>
  <tbody>${jobs.map((job) => runRow(job, scope === null))}</tbody>
</table>
</div>
<nav class="pager" aria-label="Pages">
  ${filters.beforeId !== undefined ? html`<a href="${runsLink(filters)}">First page</a>` : ''}
  ${jobs.length === PAGE_SIZE && last ? html`<a href="${runsLink(filters, { before: last.id })}" rel="next">Next page</a>` : ''}
</nav>`;
  return page({ title: 'Runs', viewer, body, section: 'runs' });
}

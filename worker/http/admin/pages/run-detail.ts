// GET /admin/runs/{id}: everything the run record holds (the API's GET /v1/jobs/{id}), the live progress bar, the
// structured last error, the history of actions, and the actions that fit the run's state and the viewer's role.
import { MASS_IMPORT_KIND } from '../../../handlers/kinds.js';
import { getCsvImportRun } from '../../../imports/csv/run-record.js';
import type { RunRecord } from '../../../queue/job-actions.js';
import type { ApiDependencies } from '../../server.js';
import { actorView, lastErrorView, progressView, resolvedByView, resultView, submitterView } from '../../views.js';
import { fileText, formatCount, formatDuration, runDuration, timeCell } from '../format.js';
import { html, type Html } from '../html.js';
import { isOperator, page, type Viewer } from '../layout.js';
import { csvCounts } from './csv-review.js';
import { CSV_KINDS } from './run-actions.js';
import { actionLinks, json, runHeading, visibleRunRecord } from './run-parts.js';

/** What a redirect after an action says (by name: the page never repeats text from the URL). */
const NOTICES: Record<string, string> = {
  finalize: 'Finalized: a worker writes the valid rows; this page follows the run to its end.',
  reject: 'Rejected: the import ends canceled.',
  cancel: 'Cancel requested.',
  requeue: 'Requeued.',
  replay: 'Replayed: the run is queued again.',
  resolve: 'Resolved: the note is in the history.',
};

/**
 * The bar's value: the run's percent; without one, an active run's bar is indeterminate (busy), and a finished run's
 * is full when it succeeded and empty otherwise — not busy for good.
 */
function barValue(state: string, percent: number | null): Html | string {
  if (percent !== null) return html` value="${percent}"`;
  if (state === 'queued' || state === 'running') return '';
  return html` value="${state === 'succeeded' ? 100 : 0}"`;
}

export function liveProgress(record: RunRecord): Html {
  const { job } = record;
  const view = progressView(job);
  const percent = view?.percent ?? null;
  return html`<section class="live" data-live-run="${job.id}" data-state="${job.state}" aria-labelledby="progress-heading">
  <h2 id="progress-heading">Progress</h2>
  <progress data-live-bar max="100"${barValue(job.state, percent)} aria-label="progress of run ${job.id}">${percent ?? 0} %</progress>
  <div class="figures">
    <span>Done: <strong data-live-percent>${percent !== null ? `${percent} %` : '—'}</strong></span>
    <span>Items: <strong data-live-done>${view?.done !== null && view?.done !== undefined ? `${formatCount(view.done)}${view.total !== null ? ` of ${formatCount(view.total)}` : ''}` : '—'}</strong></span>
    <span>Rate: <strong data-live-rate>${view?.ratePerSecond !== null && view?.ratePerSecond !== undefined ? `${view.ratePerSecond} /s` : '—'}</strong></span>
    <span>ETA: <strong data-live-eta>${formatDuration(view?.etaSeconds)}</strong></span>
    <span>Phase: <strong data-live-phase>${view?.phase ?? '—'}</strong></span>
    <span class="muted">Updates: <span data-live-status role="status">${job.state === 'queued' || job.state === 'running' || job.state === 'review_ready' ? 'connecting…' : 'finished'}</span></span>
  </div>
</section>`;
}

function lastError(record: RunRecord, viewer: Viewer): Html | string {
  // As the API shows it (views.ts): whole to an operator, less its stack; to a tenant without the worker and, for an
  // internal failure, a plain sentence in place of the message.
  const error = lastErrorView(record.job.lastError, isOperator(viewer));
  if (!error) return '';
  return html`<section aria-labelledby="error-heading"><h2 id="error-heading">Last error</h2>
<dl class="record">
  <dt>Code</dt><dd><code>${error.code}</code></dd>
  <dt>Class</dt><dd>${error.class}</dd>
  <dt>Message</dt><dd>${fileText(error.message)}</dd>
  <dt>Attempt</dt><dd>${error.attempt}</dd>
  <dt>At</dt><dd>${error.at}</dd>
  ${error.worker !== undefined ? html`<dt>Worker</dt><dd>${error.worker}</dd>` : ''}
  ${error.context ? html`<dt>Context</dt><dd><pre>${fileText(json(error.context))}</pre></dd>` : ''}
</dl></section>`;
}

function history(record: RunRecord, viewer: Viewer): Html {
  return html`<section aria-labelledby="history-heading"><h2 id="history-heading">History of actions</h2>
${
  record.actions.length === 0
    ? html`<p class="muted">No actions recorded.</p>`
    : html`<div class="table-wrap"><table>
  <thead><tr><th scope="col">At</th><th scope="col">Action</th><th scope="col">By</th><th scope="col">State after</th><th scope="col">Note</th></tr></thead>
  <tbody>${record.actions.map(
    (action) => html`<tr><td>${timeCell(action.at)}</td><td>${action.action}</td><td>${actorView(action, isOperator(viewer))}</td><td>${action.stateAfter ?? '—'}</td><td>${action.note ?? ''}</td></tr>`,
  )}</tbody></table></div>`
}</section>`;
}

export async function runDetailPage(deps: ApiDependencies, viewer: Viewer, id: number, done: string | undefined): Promise<Html> {
  const record = await visibleRunRecord(deps, viewer, id);
  const { job } = record;
  const csvRun = CSV_KINDS.has(job.kind) ? await getCsvImportRun(deps.pool, job.id) : null;
  const notice = done !== undefined && Object.hasOwn(NOTICES, done) ? NOTICES[done] : undefined;
  const submitter = submitterView(record.actions, isOperator(viewer));
  const body = html`${runHeading(record, '')}
${notice ? html`<div class="notice" role="status">${notice}</div>` : ''}
${actionLinks(record, viewer)}
<ul class="actions" aria-label="Views of this run">
  ${CSV_KINDS.has(job.kind) ? html`<li><a href="/admin/runs/${job.id}/review">CSV review: summary and failed rows</a></li>` : ''}
  ${job.kind === MASS_IMPORT_KIND ? html`<li><a href="/admin/runs/${job.id}/files">Files: imported, skipped, failed</a></li>` : ''}
</ul>
${liveProgress(record)}
${csvRun ? html`<section aria-labelledby="csv-heading"><h2 id="csv-heading">CSV import</h2>${csvCounts(csvRun, job.result)}</section>` : ''}
${lastError(record, viewer)}
<div class="columns">
<section aria-labelledby="record-heading"><h2 id="record-heading">Record</h2>
<dl class="record">
  <dt>Run</dt><dd>${job.id}</dd>
  <dt>Kind</dt><dd>${job.kind}</dd>
  <dt>Tenant</dt><dd>${job.tenantId ?? '—'}</dd>
  <dt>State</dt><dd>${job.state}${job.cancelRequestedAt ? ' (cancel requested)' : ''}</dd>
  <dt>Attempts</dt><dd>${job.attempts} of ${job.maxAttempts}</dd>
  <dt>Priority</dt><dd>${job.priority}</dd>
  <dt>Dedupe key</dt><dd>${job.dedupeKey ?? '—'}</dd>
  <dt>Started by</dt><dd>${submitter ?? '—'}</dd>
  <dt>Created</dt><dd>${timeCell(job.createdAt)}</dd>
  <dt>Runs at</dt><dd>${timeCell(job.runAt)}</dd>
  <dt>Started</dt><dd>${timeCell(job.startedAt)}</dd>
  <dt>Finished</dt><dd>${timeCell(job.finishedAt)}</dd>
  <dt>Duration</dt><dd>${runDuration(job.startedAt, job.finishedAt)}</dd>
  <dt>Updated</dt><dd>${timeCell(job.updatedAt)}</dd>
  ${job.outageDependency && job.outageStartedAt ? html`<dt>Waiting out</dt><dd>${job.outageDependency} outage since ${timeCell(job.outageStartedAt)}</dd>` : ''}
  ${record.resolution ? html`<dt>Resolved</dt><dd>${timeCell(record.resolution.at)} by ${resolvedByView(record.resolution, isOperator(viewer))}: ${record.resolution.note}</dd>` : ''}
</dl></section>
<section aria-labelledby="result-heading"><h2 id="result-heading">Result</h2>
${job.result ? html`<pre data-result>${json(resultView(job, isOperator(viewer)))}</pre>` : html`<p class="muted">No result yet.</p>`}
<h2>Payload</h2><pre>${json(job.payload)}</pre>
${job.progress ? html`<h2>Progress as reported</h2><pre>${json(job.progress)}</pre>` : ''}
</section>
</div>
${history(record, viewer)}`;
  return page({ title: `Run ${job.id}`, viewer, body, section: 'runs' });
}

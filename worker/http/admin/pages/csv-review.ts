// GET /admin/runs/{id}/review: a CSV import's validation summary, its failed rows (row number, field, reason, the
// original values) paged by row number, the download of the failed rows (the API's own ?format=csv export, so the
// same bytes), and Finalize / Reject while it waits for review.
import { safeCutIndex } from '../../../bounds.js';
import { pageOfRowErrors, type RowError } from '../../../imports/csv/row-errors.js';
import { normaliseName } from '../../../imports/csv/header.js';
import { RowRanges } from '../../../imports/csv/row-ranges.js';
import { getCsvImportRun, validationEnded, type CsvImportRun } from '../../../imports/csv/run-record.js';
import type { ApiDependencies } from '../../server.js';
import { fileText, formatCount } from '../format.js';
import { html, withQuery, type Html } from '../html.js';
import { page, type Viewer } from '../layout.js';
import { CSV_KINDS } from './run-actions.js';
import { actionLinks, runHeading, visibleRunRecord } from './run-parts.js';

export const ERROR_ROWS_PER_PAGE = 50;
/** Characters of a value the page shows; the rest is counted (the CSV download has every value whole). */
const SHOWN_VALUE_CHARS = 500;

function shownValue(value: string): Html | string {
  if (value === '') return html`<span class="muted">(empty)</span>`;
  if (value.length <= SHOWN_VALUE_CHARS) return fileText(value);
  const cut = safeCutIndex(value, SHOWN_VALUE_CHARS);
  const rest = value.length - cut;
  return html`${fileText(value.slice(0, cut))}<span class="muted"> … (${formatCount(rest)} more characters: the CSV download has them)</span>`;
}

/** The rows a finished finalize wrote (inserted or updated; unchanged rows were already there). */
export const rowsWritten = (run: CsvImportRun): number => run.rowsInserted + run.rowsUpdated;

export function csvCounts(run: CsvImportRun, result: Record<string, unknown> | null): Html {
  const duplicates = typeof result?.duplicates === 'number' ? result.duplicates : null;
  const references = Object.entries(run.referencesCreated ?? {});
  // Counted by validation (validate-import.ts): what finalize will create, per reference table.
  const toCreate = result?.referencesToCreate && typeof result.referencesToCreate === 'object' ? Object.entries(result.referencesToCreate) : null;
  // Tables with more new names than validation counts: their figure is a floor.
  const atLeast = new Set(Array.isArray(result?.referencesToCreateAtLeast) ? result.referencesToCreateAtLeast : []);
  // The valid rows the reviewer excluded, counted by finalize (a range's size would count invalid rows, blank lines and
  // lines past the end of the file too); while finalize runs, the lines asked for.
  const excluded = typeof result?.excluded === 'number' ? result.excluded : (RowRanges.fromStored(run.excludedRows)?.toString() ?? null);
  // Rows the database refused; the batches count excluded rows as failed, finalize's result takes them out.
  const failedAtWrite = typeof result?.failedAtWrite === 'number' ? result.failedAtWrite : run.excludedRows ? null : run.rowsFailed;
  const cell = (label: string, value: unknown, name: string) =>
    html`<tr><th scope="row">${label}</th><td class="num" data-csv-count="${name}">${formatCount(value)}</td></tr>`;
  return html`<table class="summary" aria-label="Validation summary">
  <tbody>
    ${cell('Rows read', run.rowsRead, 'read')}
    ${cell('Valid', run.rowsValid, 'valid')}
    ${cell('Invalid', run.rowsInvalid, 'invalid')}
    ${duplicates !== null ? cell('Of which duplicates', duplicates, 'duplicates') : ''}
    ${excluded === null ? '' : typeof excluded === 'number' ? cell('Excluded by the reviewer', excluded, 'excluded') : html`<tr><th scope="row">Excluded by the reviewer</th><td data-csv-count="excluded">lines ${excluded}</td></tr>`}
    ${
      run.finalizedAt || run.finalizedBatches > 0
        ? html`${cell('Written (inserted + updated)', rowsWritten(run), 'written')}${cell('Inserted', run.rowsInserted, 'inserted')}${cell('Updated', run.rowsUpdated, 'updated')}${cell('Unchanged', run.rowsUnchanged, 'unchanged')}${failedAtWrite === null ? '' : cell('Failed at finalize', failedAtWrite, 'failed')}`
        : ''
    }
    ${
      toCreate && !run.finalizedAt
        ? html`<tr><th scope="row">References to create</th><td data-csv-count="references-to-create">${
            toCreate.length ? toCreate.map(([table, count]) => html`${table}: ${atLeast.has(table) ? 'more than ' : ''}${formatCount(count)} `) : 'none'
          }</td></tr>`
        : ''
    }
    <tr><th scope="row">References created</th><td>${
      references.length ? references.map(([table, count]) => html`${table}: ${formatCount(count)} `) : run.finalizedAt ? 'none' : 'known after finalize'
    }</td></tr>
  </tbody>
</table>`;
}

/** The rule's name before its message, unless the message starts with it ("excluded at review: …"). */
function ruleOf(issue: RowError['issues'][number]): Html | string {
  return issue.message.startsWith(issue.rule) ? '' : html`<code>${issue.rule}</code> `;
}

function errorRow(error: RowError, header: string[]): Html {
  // The values of the fields an issue names are marked, so the eye finds them in a wide row.
  const named = new Set(error.issues.map((issue) => issue.column));
  const values = error.fields
    ? html`<dl class="values">${error.fields.map((value, index) => {
        const column = header[index] ?? `column ${index + 1}`;
        return html`<div${named.has(normaliseName(column)) ? html` class="named"` : ''}><dt>${column}</dt><dd>${shownValue(value)}</dd></div>`;
      })}</dl>`
    : html`<span class="muted">the row could not be split into fields</span>`;
  return html`<tr>
    <td class="num">${error.row}</td>
    <td>${error.issues.map((issue) => html`<div><strong>${issue.column ?? '(whole row)'}</strong>: ${ruleOf(issue)}${fileText(issue.message)}</div>`)}</td>
    <td>${values}</td>
  </tr>`;
}

export async function csvReviewPage(deps: ApiDependencies, viewer: Viewer, id: number, after: number): Promise<Html> {
  const record = await visibleRunRecord(deps, viewer, id);
  const { job } = record;
  if (!CSV_KINDS.has(job.kind)) {
    return page({ title: `Run ${id}`, viewer, section: 'runs', body: html`${runHeading(record, 'CSV review')}<p>This run is a ${job.kind} run, not a CSV import.</p>` });
  }
  const [run, { errors, more }] = await Promise.all([getCsvImportRun(deps.pool, id), pageOfRowErrors(deps.pool, id, after, ERROR_ROWS_PER_PAGE)]);
  const last = errors[errors.length - 1];
  const header = run?.header ?? [];
  const body = html`${runHeading(record, 'CSV review')}
${run ? html`<p>File <code>${run.objectKey}</code> in bucket <code>${run.bucket}</code>, profile ${run.profile}.</p>` : ''}
${actionLinks(record, viewer)}
<h2>Summary</h2>
${run ? csvCounts(run, job.result) : html`<p class="muted">Not validated yet.</p>`}
<h2 id="failed-rows">Failed rows</h2>
${
  run && !validationEnded(run)
    ? html`<p class="muted">Validation has not read the whole file (it is still running, or it stopped part-way${job.lastError ? html`: its last error is <code>${job.lastError.code}</code>` : ''}): the rows below are the failed rows found so far, not all of them, and there is no file of them.</p>`
    : run
    ? html`<p><a class="button secondary" href="/v1/jobs/${job.id}/errors?format=csv" download="job-${job.id}-errors.csv">Download failed rows as CSV</a></p>`
    : html`<p class="muted">No rows were read (the run was not validated${job.lastError ? html`: its last error is <code>${job.lastError.code}</code>` : ' yet'}): there is no file of failed rows.</p>`
}
<div class="table-wrap"><table aria-describedby="failed-rows">
  <thead><tr><th scope="col" class="num">Row</th><th scope="col">Problems (field: reason)</th><th scope="col">Original values</th></tr></thead>
  <tbody>${errors.length ? errors.map((error) => errorRow(error, header)) : html`<tr><td colspan="3">No failed rows${after ? ' after this row' : ''}.</td></tr>`}</tbody>
</table></div>
<nav class="pager" aria-label="Pages of failed rows">
  ${after > 0 ? html`<a href="/admin/runs/${job.id}/review#failed-rows">First page</a>` : ''}
  ${more && last ? html`<a rel="next" href="${withQuery(`/admin/runs/${job.id}/review`, { after: last.row })}#failed-rows">Next page</a>` : ''}
</nav>`;
  return page({ title: `CSV review of run ${id}`, viewer, body, section: 'runs' });
}

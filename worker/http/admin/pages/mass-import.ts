// GET /admin/runs/{id}/files: a mass import's files — found, imported, skipped, failed, pending, with their bytes — and
// the failed files with their reasons, paged by item number (keyset, like GET /v1/jobs/{id}/items).
import { MASS_IMPORT_KIND } from '../../../handlers/kinds.js';
import { itemTotals, listItemsAfter, type ItemRow } from '../../../imports/mass-import/items-table.js';
import { itemErrorMessage } from '../../../queue/visible-errors.js';
import type { ApiDependencies } from '../../server.js';
import { formatBytes, formatCount, timeCell } from '../format.js';
import { html, withQuery, type Html } from '../html.js';
import { isOperator, page, type Viewer } from '../layout.js';
import { actionLinks, runHeading, visibleRunRecord } from './run-parts.js';

export const FAILED_FILES_PER_PAGE = 50;

function failedRow(item: ItemRow, operator: boolean): Html {
  return html`<tr>
    <td class="num">${item.itemNo}</td>
    <td><code>${item.relativePath}</code></td>
    <td class="num">${formatBytes(item.size)}</td>
    <td><code>${item.errorCode ?? '—'}</code></td>
    <td>${itemErrorMessage(item.errorCode, item.errorMessage, operator) ?? ''}</td>
    <td>${item.errorClass ?? '—'}</td>
    <td class="num">${item.tries}</td>
    <td>${timeCell(item.updatedAt)}</td>
  </tr>`;
}

export async function massImportPage(deps: ApiDependencies, viewer: Viewer, id: number, after: number): Promise<Html> {
  const record = await visibleRunRecord(deps, viewer, id);
  const { job } = record;
  if (job.kind !== MASS_IMPORT_KIND) {
    return page({ title: `Run ${id}`, viewer, section: 'runs', body: html`${runHeading(record, 'Files')}<p>This run is a ${job.kind} run, not a mass import.</p>` });
  }
  const [totals, failed] = await Promise.all([
    itemTotals(deps.pool, id),
    listItemsAfter(deps.pool, id, { states: ['failed'], afterItemNo: after, limit: FAILED_FILES_PER_PAGE }),
  ]);
  const last = failed[failed.length - 1];
  const row = (label: string, files: number, bytes: number | null, name: string) =>
    html`<tr><th scope="row">${label}</th><td class="num" data-files="${name}">${formatCount(files)}</td><td class="num">${bytes === null ? '' : formatBytes(bytes)}</td></tr>`;
  const body = html`${runHeading(record, 'Files')}
${actionLinks(record, viewer)}
<h2>Files</h2>
<table class="summary" aria-label="Files of the run">
  <thead><tr><th scope="col"></th><th scope="col" class="num">Files</th><th scope="col" class="num">Bytes</th></tr></thead>
  <tbody>
    ${row('Found', totals.files, totals.bytes, 'found')}
    ${row('Imported', totals.done, totals.bytesDone, 'imported')}
    ${row('Skipped (already there)', totals.skipped, totals.bytesSkipped, 'skipped')}
    ${row('Failed', totals.failed, totals.bytesFailed, 'failed')}
    ${totals.failedTransient ? row('Of which transient (a re-run tries them again)', totals.failedTransient, null, 'failed-transient') : ''}
    ${row('Pending', totals.pending, null, 'pending')}
  </tbody>
</table>
<h2 id="failed-files">Failed files</h2>
${totals.failed ? html`<p><a class="button secondary" href="/v1/jobs/${job.id}/errors?format=csv" download="job-${job.id}-errors.csv">Download failed files as CSV</a></p>` : ''}
<div class="table-wrap"><table aria-describedby="failed-files">
  <thead><tr><th scope="col" class="num">Item</th><th scope="col">Path</th><th scope="col" class="num">Size</th><th scope="col">Code</th><th scope="col">Reason</th><th scope="col">Class</th><th scope="col" class="num">Tries</th><th scope="col">At</th></tr></thead>
  <tbody>${failed.length ? failed.map((item) => failedRow(item, isOperator(viewer))) : html`<tr><td colspan="8">No failed files${after >= 0 ? ' after this one' : ''}.</td></tr>`}</tbody>
</table></div>
<nav class="pager" aria-label="Pages of failed files">
  ${after >= 0 ? html`<a href="/admin/runs/${job.id}/files#failed-files">First page</a>` : ''}
  ${failed.length === FAILED_FILES_PER_PAGE && last ? html`<a rel="next" href="${withQuery(`/admin/runs/${job.id}/files`, { after: last.itemNo })}#failed-files">Next page</a>` : ''}
</nav>`;
  return page({ title: `Files of run ${id}`, viewer, body, section: 'runs' });
}

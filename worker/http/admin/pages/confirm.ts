// GET /admin/runs/{id}/{action}: the confirmation page of an action on a run — what it does, a note, the run's
// state — with a form that POSTs it back with the session's CSRF token. Plain HTML: no dialog, no script needed.
import type { ApiDependencies } from '../../server.js';
import { html, type Html } from '../html.js';
import { csrfField, errorBox, isOperator, page, type Viewer } from '../layout.js';
import type { ActionForm, PageAction } from './run-actions.js';
import { runHeading, visibleRunRecord } from './run-parts.js';

export const EMPTY_FORM: ActionForm = { note: '', resetAttempts: false, excludeRows: '', validatedAt: '' };

export async function confirmActionPage(
  deps: ApiDependencies,
  viewer: Viewer,
  id: number,
  action: PageAction,
  options: { error?: string; form?: ActionForm; staleReview?: boolean } = {},
): Promise<Html> {
  const record = await visibleRunRecord(deps, viewer, id);
  const { job } = record;
  const form = options.form ?? EMPTY_FORM;
  let refusal: string | null = null;
  if (action.operatorOnly && !isOperator(viewer)) refusal = `${action.label} needs an operator key.`;
  else if (!action.fits(job, record.resolution !== null)) refusal = `Run ${job.id} is ${job.state}${record.resolution ? ' and resolved' : ''}: it cannot be ${action.name === 'cancel' ? 'canceled' : `${action.name}d`} now.`;
  // A finalize refused as stale carries the validation its page showed: sent again it is refused again, and the
  // current validation is not one anybody reviewed. The way on is its review, then a new confirmation.
  const stale = options.staleReview
    ? html`<p><a class="button" href="/admin/runs/${job.id}/review">Review the new validation</a> then <a href="/admin/runs/${job.id}/finalize">finalize it</a>, or go <a href="/admin/runs/${job.id}">back to run ${job.id}</a>.</p>`
    : null;
  const body = html`${runHeading(record, `${action.label}?`)}
${refusal ? '' : errorBox(options.error)}
<p>${action.effect}</p>
${
  refusal
    ? html`<div class="error-box" role="alert">${refusal}</div><p><a href="/admin/runs/${job.id}">Back to run ${job.id}</a></p>`
    : stale
      ? stale
      : html`<form class="stack" method="post" action="/admin/runs/${job.id}/${action.name}">
  ${csrfField(viewer)}
  <label for="note">Note${action.noteRequired ? ' (required: why the run needs nothing more; the run\'s tenant reads it too)' : ' (optional, kept in the history; the run\'s tenant reads it too)'}</label>
  <textarea id="note" name="note" maxlength="2000"${action.noteRequired ? html` required` : ''}>${form.note}</textarea>
  ${
    action.name === 'requeue' || action.name === 'replay'
      ? html`<label><span><input type="checkbox" name="resetAttempts" value="true"${form.resetAttempts ? html` checked` : ''}> Count attempts from zero again</span></label>`
      : ''
  }
  ${
    action.name === 'finalize'
      ? html`<label for="excludeRows">Rows not to write (optional, by line number, e.g. 12,40-90)</label>
  <input id="excludeRows" name="excludeRows" value="${form.excludeRows}" maxlength="100000" autocomplete="off">
  <input type="hidden" name="validatedAt" value="${form.validatedAt || validationOf(job)}">`
      : ''
  }
  <div class="actions">
    <button type="submit" class="${action.danger ? 'danger' : ''}">Confirm: ${action.label.toLowerCase()} run ${job.id}</button>
    <a class="button secondary" href="/admin/runs/${job.id}">Back</a>
  </div>
</form>`
}`;
  return page({ title: `${action.label} run ${job.id}`, viewer, body, section: 'runs' });
}

/** The validation a finalize's confirmation page shows (the run's result.validatedAt): the one its form approves. */
function validationOf(job: { result: Record<string, unknown> | null }): string {
  const value = job.result?.validatedAt;
  return typeof value === 'string' ? value : '';
}

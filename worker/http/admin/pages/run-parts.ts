// What the pages of one run share: the run as the viewer may see it, the heading, and the action buttons.
import { getRunRecord, type RunRecord } from '../../../queue/job-actions.js';
import { JobNotFoundError } from '../../../queue/operator.js';
import type { ApiDependencies } from '../../server.js';
import { html, type Html } from '../html.js';
import { isOperator, stateBadge, type Viewer } from '../layout.js';
import { actionsFor } from './run-actions.js';

export const json = (value: unknown): string => JSON.stringify(value, null, 2);

/** The run as the viewer may see it; "not found" for another tenant's run, exactly as the API answers. */
export async function visibleRunRecord(deps: ApiDependencies, viewer: Viewer, id: number): Promise<RunRecord> {
  const record = await getRunRecord(deps.pool, id, isOperator(viewer) ? null : viewer.key.tenantId);
  if (!record) throw new JobNotFoundError(id);
  return record;
}

/** The page's heading: `<title> — Run <id> (kind, tenant) <state>`; the run page itself passes no title. */
export function runHeading(record: RunRecord, title: string): Html {
  const { job } = record;
  return html`<p class="muted"><a href="/admin/runs">Runs</a> › <a href="/admin/runs/${job.id}">Run ${job.id}</a></p>
<h1>${title ? `${title} — ` : ''}Run ${job.id} <span class="muted">(${job.kind}${job.tenantId ? `, tenant ${job.tenantId}` : ''})</span> ${stateBadge(job.state, true)}</h1>`;
}

export function actionLinks(record: RunRecord, viewer: Viewer): Html {
  const actions = actionsFor(record.job, record.resolution !== null, isOperator(viewer));
  if (actions.length === 0) return html``;
  return html`<ul class="actions" aria-label="Actions">${actions.map(
    (action) => html`<li><a class="button${action.danger ? ' danger' : ''}" href="/admin/runs/${record.job.id}/${action.name}">${action.label}…</a></li>`,
  )}</ul>`;
}


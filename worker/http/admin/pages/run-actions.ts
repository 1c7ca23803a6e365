// The actions a run's page offers, each behind a confirmation page (GET shows what it will do and asks for a note;
// POST, with the session's CSRF token, does it). The rules are the API's: the run must be visible to the signed-in
// key (else "not found"), operator-only actions need an operator key, and every action goes through
// worker/actions/run-actions.ts, so it is recorded in the run's history with the key's name.
import { cancelRun, finalizeRun, rejectRun, replayDead, requeueRun, resolveRun, type Actor } from '../../../actions/run-actions.js';
import type { Pool } from '../../../db/pool.js';
import { CSV_FINALIZE_KIND, CSV_IMPORT_KIND } from '../../../handlers/kinds.js';
import type { JobRow } from '../../../queue/types.js';

/** The kinds of a CSV import run: validation (then review) and finalize, under one job id. */
export const CSV_KINDS = new Set([CSV_IMPORT_KIND, CSV_FINALIZE_KIND]);

export interface ActionForm {
  note: string;
  resetAttempts: boolean;
  excludeRows: string;
  /** Finalize: the validation the confirmation page showed (the run's result.validatedAt). */
  validatedAt: string;
}

export interface PageAction {
  name: 'cancel' | 'requeue' | 'replay' | 'resolve' | 'finalize' | 'reject';
  label: string;
  /** What the confirmation page says the action does. */
  effect: string;
  operatorOnly: boolean;
  noteRequired: boolean;
  danger: boolean;
  fits(job: JobRow, resolved: boolean): boolean;
  run(pool: Pool, actor: Actor, id: number, form: ActionForm): Promise<unknown>;
}

const note = (form: ActionForm) => (form.note.trim() === '' ? null : form.note);

export const PAGE_ACTIONS: PageAction[] = [
  {
    name: 'finalize',
    label: 'Finalize',
    effect: 'A worker writes the valid rows of this CSV import (all but the rows you exclude). The invalid rows are not written.',
    operatorOnly: false,
    noteRequired: false,
    danger: false,
    fits: (job) => job.state === 'review_ready' && CSV_KINDS.has(job.kind),
    run: (pool, actor, id, form) =>
      finalizeRun(pool, actor, id, note(form), { excludeRows: form.excludeRows.trim() || undefined, validatedAt: form.validatedAt || undefined }),
  },
  {
    name: 'reject',
    label: 'Reject',
    effect: 'The import ends canceled; nothing is written.',
    operatorOnly: false,
    noteRequired: false,
    danger: true,
    fits: (job) => job.state === 'review_ready' && CSV_KINDS.has(job.kind),
    run: (pool, actor, id, form) => rejectRun(pool, actor, id, note(form)),
  },
  {
    name: 'cancel',
    label: 'Cancel',
    effect: 'A queued or parked run ends canceled at once; a running one stops at its next item boundary.',
    operatorOnly: true,
    noteRequired: false,
    danger: true,
    fits: (job) => job.state === 'queued' || job.state === 'running' || job.state === 'review_ready',
    run: (pool, actor, id, form) => cancelRun(pool, actor, id, note(form)),
  },
  {
    name: 'requeue',
    label: 'Requeue',
    effect: 'The same run record goes back to the queue and runs again.',
    operatorOnly: true,
    noteRequired: false,
    danger: false,
    fits: (job) => job.state === 'failed' || job.state === 'canceled',
    run: (pool, actor, id, form) => requeueRun(pool, actor, id, { resetAttempts: form.resetAttempts, note: note(form) }),
  },
  {
    name: 'replay',
    label: 'Replay',
    effect: 'The dead run goes back to the queue (same run record) and runs again.',
    operatorOnly: true,
    noteRequired: false,
    danger: false,
    fits: (job) => job.state === 'dead',
    run: (pool, actor, id, form) => replayDead(pool, actor, { ids: [id], resetAttempts: form.resetAttempts, note: note(form) }),
  },
  {
    name: 'resolve',
    label: 'Resolve',
    effect: 'Marks the run as handled: it keeps its state and history, and leaves the dead list and the dead-jobs gauge.',
    operatorOnly: true,
    noteRequired: true,
    danger: false,
    fits: (job, resolved) => !resolved && (job.state === 'failed' || job.state === 'dead' || job.state === 'partial'),
    run: (pool, actor, id, form) => resolveRun(pool, actor, id, form.note),
  },
];

export const pageAction = (name: string): PageAction | undefined => PAGE_ACTIONS.find((action) => action.name === name);

/** The actions this viewer may take on the run now. */
export function actionsFor(job: JobRow, resolved: boolean, operator: boolean): PageAction[] {
  return PAGE_ACTIONS.filter((action) => action.fits(job, resolved) && (operator || !action.operatorOnly));
}

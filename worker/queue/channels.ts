// Postgres NOTIFY channels. Notifications only wake or inform; polling and the jobs table stay the source of truth.

/** Payload: the job kind. Sent when due jobs are enqueued or requeued, so idle workers claim at once. */
export const JOBS_READY_CHANNEL = 'bulk_import_jobs_ready';
/** Payload: the job id. Sent when an operator cancels a running job, so its worker aborts it at once. */
export const JOB_CANCEL_CHANNEL = 'bulk_import_job_cancel';
/** Payload: JSON of state transitions (see docs/ARCHITECTURE.md "State notifications"). */
export const JOB_STATE_CHANNEL = 'bulk_import_job_state';
/** NOTIFY payloads must stay under 8000 bytes; the trigger packs transitions into chunks of about 7000. */
export const JOB_STATE_PAYLOAD_LIMIT = 8000;

// The job kinds this build runs, named once. A module that only needs a kind's name imports it from here, not from
// the kind's handler, which loads what running it takes (the S3 SDK, the CSV parser).
/** The kind `noop` runs as. */
export const NOOP_KIND = 'noop';
/** The kind `mass-import` runs as. */
export const MASS_IMPORT_KIND = 'mass-import';
/** The kind of a CSV import's validation phase. */
export const CSV_IMPORT_KIND = 'csv-import';
/** The kind of a CSV import's finalize phase (the same job, resumed). */
export const CSV_FINALIZE_KIND = 'csv-finalize';
/** The kind `backfill` runs as. */
export const BACKFILL_KIND = 'backfill';
/** The kind `audit` runs as. */
export const AUDIT_KIND = 'audit';

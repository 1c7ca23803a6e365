// The test projects (vitest.config.ts). Every file runs on the embedded PostgreSQL 18; the queue's own files run again
// on Debian's PostgreSQL (15 on bookworm, the oldest version production may run: README, "PostgreSQL versions"),
// where Postgres 17 and 18 features are missing (a partition's share of its parent's identity, ANALYZE ONLY, MAINTAIN).
export const EMBEDDED_POSTGRES_PROJECT = 'postgres-18';
export const DEBIAN_POSTGRES_PROJECT = 'debian-postgres';
/** TEST_DEBIAN_POSTGRES=off leaves the second project out (a machine without Debian's packages and not root). */
export const DEBIAN_POSTGRES_ENABLED = process.env.TEST_DEBIAN_POSTGRES !== 'off';

/**
 * What runs on both: every migration up and down, and the queue's statements (enqueue, claim, completion, failure and
 * retry, leases, fair share, admission, archive and retention, statistics, notifications). Fast files only: the rest
 * of the suite exercises the same statements through the import kinds.
 */
export const DEBIAN_POSTGRES_FILES = [
  'test/migrations.test.ts',
  'test/queue-enqueue-claim.test.ts',
  'test/queue-completion-plan.test.ts',
  'test/queue-lifecycle.test.ts',
  'test/queue-dependency-outage.test.ts',
  'test/queue-state-notifications.test.ts',
  'test/queue-fair-share.test.ts',
  'test/queue-archive.test.ts',
  'test/retention-catch-up.test.ts',
  'test/jobs-statistics.test.ts',
  'test/queue-estimate.test.ts',
  'test/queue-listing.test.ts',
];

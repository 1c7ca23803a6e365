// Runs planted as an attempt would have ended them — failed or dead with a recorded last error — for the tests of what
// each caller may read of them (the API, the admin pages).
import type { Queryable } from '../../worker/db/pool.js';

/** A no-op run of `tenantId` ended `state` with `lastError` as stored (class, attempt and time included); its id. */
export async function plantEndedRun(db: Queryable, tenantId: string, lastError: Record<string, unknown>, state: 'failed' | 'dead' = 'failed'): Promise<number> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO jobs (kind, tenant_id, state, attempts, finished_at, last_error) VALUES ('noop', $1, $2, 1, now(), $3::jsonb) RETURNING id`,
    [tenantId, state, lastError],
  );
  return rows[0]!.id;
}

// What each job kind's round submits, how its progress is read, what drives it on (the review of a CSV import), and
// the invariants checked once every job has ended: every job in the state it must end in, and its writes counted —
// nothing lost, nothing written twice.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { finalizeImport, submitJob } from '../../worker/api.js';
import { BACKFILL_KIND, CSV_FINALIZE_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, NOOP_KIND } from '../../worker/handlers/kinds.js';
import { objectKeyFor } from '../../worker/imports/object-key.js';
import { plantedFile, upload, type PlantedFile } from '../../test/fixtures/csv-products.js';
import { contentOf, listObjects, makeTree, objectBytes, sha256, type TreeFile } from '../../test/support/mass-import-tree.js';
import type { ChaosEnvironment, RoundResources } from './environment.js';
import type { FaultType } from './faults.js';
import type { Rng } from './rng.js';

export const KINDS = ['noop', 'mass-import', 'csv', 'backfill'] as const;
export type KindName = (typeof KINDS)[number];

export interface JobSnapshot {
  id: number;
  kind: string;
  tenantId: string | null;
  state: string;
  attempts: number;
  maxAttempts: number;
  progress: Record<string, unknown> | null;
  result: Record<string, unknown> | null;
  lastError: Record<string, unknown> | null;
}

export const TERMINAL = new Set(['succeeded', 'partial', 'failed', 'dead', 'canceled']);

export interface ScenarioContext {
  env: ChaosEnvironment;
  round: RoundResources;
  rng: Rng;
  quick: boolean;
  /** A scratch folder of this round. */
  scratch: string;
}

export interface Scenario {
  /** The faults that touch what this kind uses (noop and backfill never reach S3). */
  faults: readonly FaultType[];
  /** Extra settings of this round's worker processes. */
  workerEnv(context: ScenarioContext): Record<string, string>;
  /** Data the jobs work on, made before the workers start. */
  setup(context: ScenarioContext): Promise<void>;
  submit(context: ScenarioContext): Promise<number[]>;
  /** 0..1: how far the round's work has come (faults are planned at random points of it). */
  progress(jobs: JobSnapshot[]): number;
  /** Moves the round on (approves parked CSV imports); true once every job has ended. */
  advance(context: ScenarioContext, jobs: JobSnapshot[]): Promise<boolean>;
  /** The invariants, checked after the workers stopped; returns violations. */
  check(context: ScenarioContext, jobs: JobSnapshot[]): Promise<string[]>;
  /** Removes the scenario's scratch data. */
  dispose(context: ScenarioContext): Promise<void>;
}

const DB_FAULTS: readonly FaultType[] = ['kill-worker', 'pg-restart', 'pg-pause', 'pg-terminate'];
const ALL_FAULTS: readonly FaultType[] = [...DB_FAULTS, 's3-restart', 's3-faults'];
const MAX_ATTEMPTS = 25;

const fraction = (progress: Record<string, unknown> | null): number => {
  const done = Number(progress?.done ?? 0);
  const total = Number(progress?.total ?? 0);
  return total > 0 ? Math.min(1, done / total) : 0;
};
const allTerminal = (jobs: JobSnapshot[]) => jobs.length > 0 && jobs.every((job) => TERMINAL.has(job.state));
const describeJob = (job: JobSnapshot) =>
  `job ${job.id} (${job.kind}${job.tenantId ? `, tenant ${job.tenantId}` : ''}) ended ${job.state} after ${job.attempts} attempt(s)` +
  (job.lastError ? `; last error ${JSON.stringify(job.lastError).slice(0, 400)}` : '');

/** Common to every kind: the state each job must end in, within its attempts. */
function checkStates(jobs: JobSnapshot[], expected: (job: JobSnapshot) => string): string[] {
  const violations: string[] = [];
  for (const job of jobs) {
    if (job.state !== expected(job)) violations.push(`${describeJob(job)}, expected ${expected(job)}`);
    else if (job.attempts > job.maxAttempts) violations.push(`job ${job.id} ran ${job.attempts} attempts, more than its ${job.maxAttempts}`);
  }
  return violations;
}

// ---------------------------------------------------------------------------------------------------------- noop

function noopScenario(quick: boolean): Scenario {
  // Long enough per job that the faults land while the queue is busy (500 jobs on 2 × 4 slots: about 8 s undisturbed).
  const count = quick ? 200 : 500;
  const sleepMs = quick ? 80 : 120;
  return {
    faults: DB_FAULTS,
    workerEnv: () => ({ WORKER_KINDS: NOOP_KIND }),
    setup: async () => {},
    async submit({ round }) {
      const ids: number[] = [];
      for (let start = 0; start < count; start += 25) {
        const batch = Array.from({ length: Math.min(25, count - start) }, (_, i) => start + i);
        const jobs = await Promise.all(
          batch.map((seq) => submitJob(round.pool, { kind: NOOP_KIND, payload: { sleepMs, seq }, maxAttempts: MAX_ATTEMPTS })),
        );
        ids.push(...jobs.map(({ job }) => job.id));
      }
      return ids;
    },
    progress: (jobs) => jobs.filter((job) => TERMINAL.has(job.state)).length / count,
    advance: async (_context, jobs) => allTerminal(jobs),
    async check(_context, jobs) {
      const violations = checkStates(jobs, () => 'succeeded');
      if (jobs.length !== count) violations.push(`${jobs.length} noop jobs found, ${count} submitted`);
      const wrong = jobs.filter((job) => job.state === 'succeeded' && job.result?.sleptMs !== sleepMs);
      if (wrong.length) violations.push(`${wrong.length} noop jobs succeeded without their result (first: job ${wrong[0]!.id})`);
      return violations;
    },
    dispose: async () => {},
  };
}

// --------------------------------------------------------------------------------------------------- mass-import

const MiB = 1024 * 1024;
const IMPORT_PREFIX = 'chaos';
const IMPORT_TENANTS = ['alpha', 'beta'];

function massImportScenario(quick: boolean): Scenario {
  const small = quick ? 60 : 300;
  const files: TreeFile[] = [
    ...Array.from({ length: small }, (_, i) => ({
      path: `batch-${Math.floor(i / 40)}/file ${String(i).padStart(3, '0')}.pdf`,
      size: 500 + ((i * 7919) % 20_000),
    })),
    // Over the multipart threshold (5 MiB in CHAOS_WORKER_TIMINGS): goes up in parts.
    { path: 'big/multipart scan.tiff', size: 5 * MiB + 4_321 },
  ];
  let root = '';
  return {
    faults: ALL_FAULTS,
    workerEnv: () => ({ WORKER_KINDS: MASS_IMPORT_KIND, IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false' }),
    async setup() {
      root = await makeTree(files, 'chaos');
    },
    async submit({ round }) {
      const ids: number[] = [];
      for (const tenant of IMPORT_TENANTS) {
        const { job } = await submitJob(round.pool, {
          kind: MASS_IMPORT_KIND,
          tenantId: tenant,
          payload: { prefix: IMPORT_PREFIX },
          maxAttempts: MAX_ATTEMPTS,
        });
        ids.push(job.id);
      }
      return ids;
    },
    // Only the upload phase counts (planning and checking report done/total of their own).
    progress: (jobs) =>
      jobs.reduce((sum, job) => sum + (TERMINAL.has(job.state) ? 1 : job.progress?.phase === 'importing' ? fraction(job.progress) : 0), 0) / jobs.length,
    advance: async (_context, jobs) => allTerminal(jobs),
    async check({ env, round }, jobs) {
      const violations = checkStates(jobs, () => 'succeeded');
      const expected = new Map(files.map((file) => [file.path, sha256(contentOf(file, 'chaos'))]));
      for (const job of jobs) {
        const tenant = job.tenantId ?? '-';
        const result = job.result ?? {};
        if (job.state === 'succeeded' && (result.files !== files.length || result.imported !== files.length || result.failed !== 0)) {
          violations.push(`mass-import job ${job.id}: result ${JSON.stringify({ files: result.files, imported: result.imported, failed: result.failed })}, expected ${files.length} files all imported`);
        }
        const keyPrefix = objectKeyFor(IMPORT_PREFIX, tenant, 'x').slice(0, -1);
        const { rows } = await round.pool.query<{ source_path: string; object_key: string; sha256: string; import_job_id: number | null }>(
          `SELECT source_path, object_key, sha256, import_job_id FROM documents
           WHERE bucket = $1 AND starts_with(object_key, $2) ORDER BY source_path`,
          [round.bucket, keyPrefix],
        );
        const objects = await listObjects(env.s3, round.bucket, keyPrefix);
        const distinctKeys = new Set(rows.map((row) => row.object_key)).size;
        if (rows.length !== files.length || distinctKeys !== rows.length) {
          violations.push(`tenant ${tenant}: ${rows.length} documents rows (${distinctKeys} distinct keys), expected ${files.length}`);
        }
        if (objects.length !== files.length) violations.push(`tenant ${tenant}: ${objects.length} S3 objects, expected ${files.length}`);
        const byPath = new Map(rows.map((row) => [row.source_path, row]));
        const objectKeys = new Set(objects.map((object) => object.key));
        let wrongRows = 0;
        let wrongBytes = 0;
        let missingObjects = 0;
        const firstProblems: string[] = [];
        for (const [path, digest] of expected) {
          const key = objectKeyFor(IMPORT_PREFIX, tenant, path);
          const row = byPath.get(path);
          if (!row || row.object_key !== key || row.sha256 !== digest || row.import_job_id !== job.id) {
            wrongRows += 1;
            if (firstProblems.length < 3) firstProblems.push(`row of ${path}: ${row ? JSON.stringify(row) : 'missing'}`);
          }
          if (!objectKeys.has(key)) {
            missingObjects += 1;
            if (firstProblems.length < 3) firstProblems.push(`object ${key} missing`);
            continue;
          }
          const bytes = await objectBytes(env.s3, round.bucket, key);
          if (sha256(bytes) !== digest) {
            wrongBytes += 1;
            if (firstProblems.length < 3) firstProblems.push(`object ${key}: ${bytes.length} bytes, sha256 differs from the file's`);
          }
        }
        if (wrongRows || wrongBytes || missingObjects) {
          violations.push(
            `tenant ${tenant}: ${wrongRows} rows wrong or missing, ${missingObjects} objects missing, ${wrongBytes} objects with other bytes than the file (${firstProblems.join('; ')})`,
          );
        }
        const expectedKeys = new Set([...expected.keys()].map((path) => objectKeyFor(IMPORT_PREFIX, tenant, path)));
        const extra = objects.filter((object) => !expectedKeys.has(object.key));
        if (extra.length) violations.push(`tenant ${tenant}: ${extra.length} S3 objects no file maps to (first: ${extra[0]!.key})`);
        const { rows: items } = await round.pool.query<{ state: string; n: number }>(
          'SELECT state, count(*)::int AS n FROM import_items WHERE job_id = $1 GROUP BY state',
          [job.id],
        );
        const notDone = items.filter((item) => item.state !== 'done');
        if (notDone.length) violations.push(`mass-import job ${job.id}: items not done: ${JSON.stringify(notDone)}`);
      }
      return violations;
    },
    async dispose() {
      if (root) await rm(root, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------------- csv-import + finalize

const CSV_TENANTS = ['c1', 'c2'];

function csvScenario(quick: boolean): Scenario {
  const rows = quick ? 2_000 : 6_000;
  let file: PlantedFile | undefined;
  const reviewed = new Map<number, Record<string, unknown>>();
  const finalized = new Set<number>();
  return {
    faults: ALL_FAULTS,
    workerEnv: () => ({ WORKER_KINDS: 'csv-import,csv-finalize' }),
    async setup({ env, round }) {
      // Every 50th row is bad (of every rule in rotation, a duplicate key among them).
      file = plantedFile(rows, 50, 'CHAOS');
      for (const tenant of CSV_TENANTS) await upload(env.s3, round.bucket, `imports/${tenant}/products.csv`, file.body);
    },
    async submit({ round }) {
      const ids: number[] = [];
      for (const tenant of CSV_TENANTS) {
        const { job } = await submitJob(round.pool, {
          kind: CSV_IMPORT_KIND,
          tenantId: tenant,
          payload: { bucket: round.bucket, key: `imports/${tenant}/products.csv`, profile: 'products' },
          maxAttempts: MAX_ATTEMPTS,
        });
        ids.push(job.id);
      }
      return ids;
    },
    progress: (jobs) =>
      jobs.reduce((sum, job) => {
        if (TERMINAL.has(job.state)) return sum + 1;
        if (job.state === 'review_ready') return sum + 0.5;
        return sum + (job.kind === CSV_FINALIZE_KIND ? 0.5 + fraction(job.progress) / 2 : fraction(job.progress) / 2);
      }, 0) / jobs.length,
    async advance({ round }, jobs) {
      for (const job of jobs) {
        if (job.state !== 'review_ready' || finalized.has(job.id)) continue;
        reviewed.set(job.id, job.result ?? {});
        try {
          await finalizeImport(round.pool, job.id);
          finalized.add(job.id);
        } catch {
          // The database went away mid-call, or the call went through and its answer was lost: the next poll sees
          // the job still parked (try again) or finalizing.
          const { rows } = await round.pool.query<{ kind: string }>('SELECT kind FROM jobs WHERE id = $1', [job.id]).catch(() => ({ rows: [] }));
          if (rows[0]?.kind === CSV_FINALIZE_KIND) finalized.add(job.id);
        }
      }
      // An import that ended before review (failed, dead) ends the round too: the check reports it.
      return allTerminal(jobs);
    },
    async check({ round }, jobs) {
      const planted = file!;
      const valid = planted.valid.length;
      const violations = checkStates(jobs, () => 'partial'); // invalid rows are skipped: the import ends partial
      for (const job of jobs) {
        const tenant = job.tenantId!;
        const review = reviewed.get(job.id);
        if (!review) violations.push(`csv job ${job.id} was never seen in review_ready`);
        else if (review.valid !== valid || review.invalid !== planted.bad.size) {
          violations.push(`csv job ${job.id}: validation found ${review.valid} valid / ${review.invalid} invalid rows, expected ${valid} / ${planted.bad.size}`);
        }
        if (job.kind !== CSV_FINALIZE_KIND) violations.push(`csv job ${job.id} ended as ${job.kind}, never finalized`);
        const result = job.result ?? {};
        if (TERMINAL.has(job.state) && job.kind === CSV_FINALIZE_KIND &&
          (result.inserted !== valid || result.updated !== 0 || result.unchanged !== 0 || result.failedAtWrite !== 0)) {
          violations.push(
            `csv job ${job.id}: finalize result ${JSON.stringify({ inserted: result.inserted, updated: result.updated, unchanged: result.unchanged, failedAtWrite: result.failedAtWrite })}, expected ${valid} inserted and nothing else (a batch written twice shows as unchanged)`,
          );
        }
        const { rows: counts } = await round.pool.query<{ n: number; skus: number; quantity: string | null }>(
          'SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus, sum(quantity)::text AS quantity FROM products WHERE tenant_id = $1',
          [tenant],
        );
        const expectedQuantity = String(planted.valid.reduce((sum, row) => sum + Number(row.quantity), 0));
        const got = counts[0]!;
        if (got.n !== valid || got.skus !== valid || got.quantity !== expectedQuantity) {
          violations.push(`tenant ${tenant}: ${got.n} products rows (${got.skus} distinct skus, quantity ${got.quantity}), expected ${valid} (quantity ${expectedQuantity})`);
        }
        const { rows: skus } = await round.pool.query<{ sku: string }>('SELECT sku FROM products WHERE tenant_id = $1 ORDER BY sku', [tenant]);
        const expectedSkus = planted.valid.map((row) => row.sku).sort();
        const gotSkus = skus.map((row) => row.sku);
        if (gotSkus.length === expectedSkus.length && gotSkus.some((sku, i) => sku !== expectedSkus[i])) {
          violations.push(`tenant ${tenant}: the products rows are not exactly the valid rows of the file`);
        }
        for (const table of ['categories', 'suppliers', 'locations']) {
          const { rows: refs } = await round.pool.query<{ n: number; names: number }>(
            `SELECT count(*)::int AS n, count(DISTINCT name)::int AS names FROM ${table} WHERE tenant_id = $1`,
            [tenant],
          );
          if (refs[0]!.n !== refs[0]!.names) violations.push(`tenant ${tenant}: ${table} holds duplicate names (${refs[0]!.n} rows, ${refs[0]!.names} names)`);
        }
      }
      return violations;
    },
    dispose: async () => {},
  };
}

// ------------------------------------------------------------------------------------------------------- backfill

function backfillScenario(quick: boolean): Scenario {
  const total = quick ? 30_000 : 100_000;
  return {
    faults: DB_FAULTS,
    workerEnv: () => ({ WORKER_KINDS: BACKFILL_KIND }),
    async setup({ round }) {
      // Documents imported before file_extension existed (the insert trigger that fills it is off while they go in),
      // as test/backfill-resume.test.ts seeds them; and a trigger of the harness's that records every committed write
      // of file_extension, so a row written twice (a batch redone after its commit) is counted.
      await round.pool.query(`
        CREATE TABLE chaos_backfill_writes (id bigint NOT NULL);
        CREATE FUNCTION chaos_record_write() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN INSERT INTO chaos_backfill_writes VALUES (NEW.id); RETURN NULL; END $$;
        CREATE TRIGGER chaos_record_write AFTER UPDATE OF file_extension ON documents
          FOR EACH ROW EXECUTE FUNCTION chaos_record_write();
        ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write;`);
      await round.pool.query(
        `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
         SELECT 'tenant-' || (g % 4), 'scans/' || (g % 50) || '/doc-' || g || (ARRAY['.PDF', '.jpg', '', '.tar.gz'])[1 + g % 4],
                repeat('0', 64), g, 'application/octet-stream', 'bucket', 'documents/' || g
         FROM generate_series(1, $1::int) AS g`,
        [total],
      );
      await round.pool.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write; ANALYZE documents');
    },
    async submit({ round }) {
      const { job } = await submitJob(round.pool, {
        kind: BACKFILL_KIND,
        payload: { name: 'documents-file-extension', batchSize: 200, parallelism: 2 },
        maxAttempts: MAX_ATTEMPTS,
      });
      return [job.id];
    },
    progress: (jobs) => (TERMINAL.has(jobs[0]?.state ?? '') ? 1 : fraction(jobs[0]?.progress ?? null)),
    advance: async (_context, jobs) => allTerminal(jobs),
    async check({ round }, jobs) {
      const violations = checkStates(jobs, () => 'succeeded');
      const { rows } = await round.pool.query<{ missing: number; wrong: number }>(
        `SELECT count(*) FILTER (WHERE file_extension IS NULL)::int AS missing,
                count(*) FILTER (WHERE file_extension IS DISTINCT FROM documents_file_extension(source_path))::int AS wrong
         FROM documents`,
      );
      if (rows[0]!.missing || rows[0]!.wrong) violations.push(`backfill: ${rows[0]!.missing} rows still lack file_extension, ${rows[0]!.wrong} differ from the rule`);
      const { rows: writes } = await round.pool.query<{ rows: number; twice: number; first: number | null }>(
        `SELECT count(*)::int AS rows, count(*) FILTER (WHERE n > 1)::int AS twice, min(id) FILTER (WHERE n > 1) AS first
         FROM (SELECT id, count(*) AS n FROM chaos_backfill_writes GROUP BY id) AS per_row`,
      );
      const w = writes[0]!;
      if (w.rows !== total) violations.push(`backfill: ${w.rows} rows written, expected ${total}`);
      if (w.twice) violations.push(`backfill: ${w.twice} rows written more than once (first: id ${w.first})`);
      return violations;
    },
    dispose: async () => {},
  };
}

export function createScenario(kind: KindName, quick: boolean): Scenario {
  switch (kind) {
    case 'noop':
      return noopScenario(quick);
    case 'mass-import':
      return massImportScenario(quick);
    case 'csv':
      return csvScenario(quick);
    case 'backfill':
      return backfillScenario(quick);
  }
}

export function scratchOf(env: ChaosEnvironment, name: string): string {
  return join(env.dir, 'rounds', name);
}

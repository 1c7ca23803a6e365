// `audit`: the data-consistency audit of what imports wrote (worker/audit/consistency-audit.ts): reference ids of
// imported products, per-run row counts of finished CSV imports, documents rows against bucket objects. Findings are
// stored with the run (audit_findings); nothing is repaired. Payload:
// { checks?: ["references", "csv-runs", "documents"], tenant?, batchSize?, documentsPrefix?, listLimit? }.
// The stack enqueues one every night (infra: the audit schedule, with its bucketPrefix as documentsPrefix); operators
// with `bulk-import audit start`. Only a full-scope run (no tenant, every check, a whole import root as its documents
// prefix) publishes the `AuditFindings` metric the alarm reads: a narrowed run that finds nothing says nothing about
// what it did not look at, so it must not clear the alarm a full run raised.
import { AUDIT_CHECK_GROUPS, runConsistencyAudit, type AuditCheckGroup } from '../audit/consistency-audit.js';
import { DEFAULT_DOCUMENTS_PREFIX, DOCUMENTS_PREFIX_RULE, documentsPrefixProblem, isWholeImportRoot } from '../audit/documents-prefix.js';
import { assertSameTenant } from '../imports/tenant.js';
import { PermanentJobError } from '../queue/errors.js';
import { AUDIT_KIND } from './kinds.js';
import { countMetric } from './metrics.js';
import { PayloadReader } from './payload.js';
import type { JobHandler } from './types.js';

export interface AuditPayload {
  checks: AuditCheckGroup[];
  tenant: string | null;
  batchSize: number;
  documentsPrefix: string;
  listLimit: number;
}

const PAYLOAD_FIELDS = ['checks', 'tenant', 'batchSize', 'documentsPrefix', 'listLimit'];
/** Products per keyset batch: one statement of a few hundred ms at most on a busy table. */
export const DEFAULT_AUDIT_BATCH_SIZE = 10_000;
/** The metric (dimension Kind = audit) the on-call alarm reads: findings of one full-scope run (see isFullScope). */
export const AUDIT_FINDINGS_METRIC = 'AuditFindings';

export const auditHandler: JobHandler<AuditPayload> = {
  kind: AUDIT_KIND,
  description: 'checks what imports wrote: reference ids of products, rows per CSV run, documents rows vs objects',
  parsePayload(raw) {
    const read = new PayloadReader(AUDIT_KIND, raw);
    read.onlyKnown(PAYLOAD_FIELDS);
    const checks = raw.checks ?? [...AUDIT_CHECK_GROUPS];
    if (!Array.isArray(checks) || checks.length === 0 || checks.some((check) => !(AUDIT_CHECK_GROUPS as readonly unknown[]).includes(check))) {
      throw new PermanentJobError(
        `invalid audit payload: "checks" must be a non-empty list of ${AUDIT_CHECK_GROUPS.join(', ')}`,
        'INVALID_PAYLOAD',
        { field: 'checks' },
      );
    }
    return {
      checks: [...new Set(checks as AuditCheckGroup[])],
      tenant: read.optionalString('tenant', /^\S(.{0,198}\S)?$/s, 'a tenant id (1-200 characters)') ?? null,
      batchSize: read.optionalInteger('batchSize', 100, 100_000) ?? DEFAULT_AUDIT_BATCH_SIZE,
      documentsPrefix: parseDocumentsPrefix(read.optionalString('documentsPrefix')),
      listLimit: read.optionalInteger('listLimit', 0, 100_000) ?? 10_000,
    };
  },
  // One audit of the same scope at a time: the nightly schedule never stacks runs behind a slow one.
  defaultDedupeKey(payload, tenantId) {
    return `audit:${payload.tenant ?? tenantId ?? '*'}`;
  },
  async run(context) {
    const { payload, job, services, log, signal } = context;
    // Enqueue refuses the mismatch already (api.ts runTenant); a run that got in another way must not audit another
    // tenant's rows under this tenant's name, where its key reads the result.
    assertSameTenant(AUDIT_KIND, payload.tenant, job.tenantId);
    const tenantId = payload.tenant ?? job.tenantId;
    const result = await runConsistencyAudit({
      pool: services.pool,
      auditJobId: job.id,
      assertLeaseHeld: context.assertLeaseHeld,
      checks: payload.checks,
      tenantId,
      batchSize: payload.batchSize,
      s3: services.s3,
      bucket: services.bucket,
      documentsPrefix: payload.documentsPrefix,
      listLimit: payload.listLimit,
      signal,
      onProgress: (progress) => context.progress.update(progress),
    });
    const total = result.findings + result.findingsNotStored;
    // A run that skipped the documents check (no S3 configured) did not look at everything either.
    const fullScope = isFullScope(payload, tenantId) && !(result.documents !== undefined && 'skipped' in result.documents);
    log.info(
      { findings: total, by_check: result.byCheck, products: result.productsScanned, duration_ms: result.durationMs, full_scope: fullScope },
      'audit done',
    );
    return {
      result: { ...result, fullScope },
      metrics: {
        // A narrowed run's 0 would clear the alarm while the last full run's findings still stand.
        ...(fullScope ? { [AUDIT_FINDINGS_METRIC]: countMetric(total) } : {}),
        AuditRowsScanned: countMetric(result.productsScanned ?? 0),
      },
    };
  },
};

/**
 * A run of every check over every tenant and a whole import root: the only kind whose finding count stands for the
 * whole data set. A deeper documents prefix (imports/acme/) lists part of the objects only.
 */
function isFullScope({ checks, documentsPrefix }: AuditPayload, tenantId: string | null): boolean {
  return tenantId === null && AUDIT_CHECK_GROUPS.every((check) => checks.includes(check)) && isWholeImportRoot(documentsPrefix);
}

function parseDocumentsPrefix(value: string | undefined): string {
  if (value === undefined) return DEFAULT_DOCUMENTS_PREFIX;
  const problem = documentsPrefixProblem(value);
  if (problem === null) return value;
  throw new PermanentJobError(
    `invalid ${AUDIT_KIND} payload: "documentsPrefix" ${problem}; expected ${DOCUMENTS_PREFIX_RULE}`,
    'INVALID_PAYLOAD',
    { field: 'documentsPrefix' },
  );
}

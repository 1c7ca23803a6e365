// Tenant ids of import runs: their form, and which tenant a run imports for (its payload's `tenant` or the job's).
// One home for every import kind, so they accept the same ids and explain a refusal in the same words; the kinds that
// work on what imports wrote (audit) refuse a payload tenant that is not the job's with the same check.
import { PermanentJobError } from '../queue/errors.js';

/** A tenant id: 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit (it is an object key segment). */
export const TENANT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** What TENANT_PATTERN accepts, in words, for error messages. */
export const TENANT_RULE = '1-128 letters, digits, ".", "_" or "-"';

export function isValidTenant(tenant: string): boolean {
  return TENANT_PATTERN.test(tenant);
}

/**
 * Refuses a payload tenant other than the job's: the run would act on another tenant's rows while it is visible to
 * (and its result readable by) the job's tenant. Either alone, or neither, is fine.
 */
export function assertSameTenant(kind: string, payloadTenant: string | null | undefined, jobTenant: string | null): void {
  if (payloadTenant !== undefined && payloadTenant !== null && jobTenant !== null && payloadTenant !== jobTenant) {
    throw new PermanentJobError(
      `${kind} payload tenant "${payloadTenant}" differs from the job's tenant "${jobTenant}"; give one or make them equal`,
      'TENANT_MISMATCH',
    );
  }
}

/**
 * The tenant a run of `kind` imports for: the payload's, or the job's when the payload names none. Both given must
 * agree, and a run without any tenant is refused — documents always belong to a tenant.
 */
export function resolveTenant(kind: string, payloadTenant: string | undefined, jobTenant: string | null): string {
  assertSameTenant(kind, payloadTenant, jobTenant);
  const tenant = payloadTenant ?? jobTenant;
  if (tenant === null || !isValidTenant(tenant)) {
    throw new PermanentJobError(
      `${kind} needs a tenant: set "tenant" in the payload or enqueue with --tenant (${TENANT_RULE})`,
      'TENANT_REQUIRED',
    );
  }
  return tenant;
}

/**
 * At submit, for the kinds that import for a tenant (JobHandler.requiresTenant): the run's tenant, or a refusal before
 * anything is written — a run without one, or with one no object key can hold, would only fail when it starts.
 */
export function requireSubmitTenant(kind: string, tenant: string | null): string {
  if (tenant === null || !isValidTenant(tenant)) {
    throw new PermanentJobError(
      `a ${kind} run imports for a tenant: give the run's tenant (an operator's "tenant", the CLI's --tenant) or ` +
        `payload.tenant, ${TENANT_RULE}${tenant === null ? '' : `, not ${JSON.stringify(tenant)}`}`,
      'TENANT_REQUIRED',
      { field: 'tenant' },
    );
  }
  return tenant;
}

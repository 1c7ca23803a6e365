// Retry delay: exponential with full jitter, capped ("Exponential Backoff and Jitter", AWS Architecture Blog).
// Full jitter spreads retries of many jobs that failed together (an S3 outage) instead of retrying them in waves.

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

/** The ceiling of the delay after `attempt` (1-based) failed attempts: min(max, base · 2^(attempt-1)). */
export function backoffCeilingMs(policy: BackoffPolicy, attempt: number): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 40);
  return Math.min(policy.maxMs, policy.baseMs * 2 ** exponent);
}

/** A delay drawn uniformly from [0, ceiling]. `random` is injectable for tests. */
export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  return Math.floor(random() * (backoffCeilingMs(policy, attempt) + 1));
}

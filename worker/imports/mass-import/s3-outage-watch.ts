// An S3 outage seen from inside a mass import: while S3 is down every file fails the same way (connection refused or
// reset, timeouts, 5xx, SlowDown after the SDK's and the item's own retries). Such failures are held back instead of
// recorded as failed items: if a streak of them reaches the breaker's threshold, or the attempt runs out of files
// with some still held and S3 does not answer a probe, the attempt stops with a DependencyOutageError — the held
// files stay `pending`, the queue lets the run wait for S3 without spending an attempt (queue/outage.ts), and the next
// attempt imports them. A held failure followed by a file that goes through was that file's own problem: it is
// recorded as a failed item (transient) after all, as before.
import { HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { PermanentJobError } from '../../queue/errors.js';
import { DependencyOutageError, isS3OutageError } from '../../queue/outage.js';
import { hasNoCredentialSource } from '../../storage/s3-client.js';
import type { TransferOutcome } from './item-outcome-batcher.js';

export type FailedTransfer = Extract<TransferOutcome, { kind: 'failed' }>;

// Transient S3 item failures that are about the bytes sent or the clock, not about S3 being available.
const NOT_OUTAGE_CODES = new Set(['S3_XAmzContentSHA256Mismatch', 'S3_BadDigest', 'S3_IncompleteBody', 'S3_RequestTimeTooSkewed']);

/** Whether a file's failure (after its retries) looks like S3 being unavailable rather than something about the file. */
export function isS3OutageFailure(outcome: TransferOutcome): boolean {
  return outcome.kind === 'failed' && outcome.errorClass === 'transient' && outcome.code.startsWith('S3_') && !NOT_OUTAGE_CODES.has(outcome.code);
}

export class S3OutageWatch {
  private held: FailedTransfer[] = [];
  private since: Date | undefined;
  /** A file went through in this attempt: S3 worked before this outage (a new one, not an earlier attempt's). */
  private worked = false;

  constructor(
    /** Files failing in a row, with nothing going through in between, that make an outage. */
    private readonly threshold: number,
    private readonly bucket: string,
  ) {}

  /**
   * Looks at a file's outcome before it is recorded. `hold`: an outage-like failure, not to be recorded now.
   * `release`: failures held earlier that turned out to be their files' own (a later file went through): record them.
   */
  observe(outcome: TransferOutcome): { hold: boolean; release: FailedTransfer[] } {
    if (isS3OutageFailure(outcome)) {
      this.since ??= new Date();
      this.held.push(outcome as FailedTransfer);
      return { hold: true, release: [] };
    }
    // A permanent failure (a file's own) neither breaks nor extends the streak.
    if (outcome.kind === 'failed') return { hold: false, release: [] };
    this.worked = true;
    this.since = undefined;
    return { hold: false, release: this.held.splice(0) };
  }

  /** The streak is long enough to call it an outage. */
  get tripped(): boolean {
    return this.held.length >= this.threshold;
  }

  get holding(): number {
    return this.held.length;
  }

  /** The error that stops the attempt; the held files stay pending. */
  outage(reason: string): DependencyOutageError {
    const last = this.held[this.held.length - 1];
    return new DependencyOutageError(
      `S3 unavailable: ${reason} (last: ${last?.code ?? '?'} ${last?.message ?? ''}); none of them was recorded as failed — ` +
        'the run waits for S3 and resumes with the files not yet imported',
      's3',
      this.since ?? new Date(),
      this.worked,
      'S3_UNAVAILABLE',
      { bucket: this.bucket, heldFiles: this.held.length, lastCode: last?.code },
      // It quotes S3's own message of the last file held.
      { internal: true },
    );
  }

  /**
   * The attempt has no file left to start and some failures are still held (fewer than the threshold): ask S3 itself.
   * No answer (refused, reset, timeout, 5xx): an outage. Any answer (even 403/404): S3 is up, so the held failures are
   * the files' own and are returned to be recorded.
   */
  async settle(s3: S3Client, signal: AbortSignal, timeoutMs: number): Promise<{ outage: DependencyOutageError } | { release: FailedTransfer[] }> {
    if (this.held.length === 0) return { release: [] };
    const silence = await s3Silence(s3, this.bucket, signal, timeoutMs);
    if (silence !== undefined) return { outage: this.outage(`the last ${this.held.length} file(s) failed after their retries and S3 does not answer (${silence})`) };
    return { release: this.held.splice(0) };
  }
}

// The SDK could not get credentials (the task role's credentials endpoint did not answer a refresh), or S3 says those
// it signed with have expired. Every request fails so until the next refresh works: an outage of S3 as the run sees
// it, not the files' fault nor the run's (queue/outage.ts has no word for it: these are 4xx, or no answer at all) —
// unless the worker has no source of credentials at all (hasNoCredentialSource): one with none configured (no task
// role) gets the very same CredentialsProviderError, and waiting does not bring them: see noCredentialsError.
const CREDENTIALS_UNAVAILABLE = new Set(['CredentialsProviderError', 'ExpiredToken']);

/** Whether an error of the S3 client says it has no valid credentials just now (see CREDENTIALS_UNAVAILABLE). */
export function isCredentialsUnavailable(error: unknown): boolean {
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' && CREDENTIALS_UNAVAILABLE.has(name);
}

export const S3_NO_CREDENTIALS_CODE = 'S3_NO_CREDENTIALS';

/**
 * Credentials unavailable to a client that never had any and has no source of them (hasNoCredentialSource: no task
 * role's endpoint, no keys in the environment): a worker without credentials, not a refresh that failed or an
 * endpoint slow to answer at a task's start, which are waited out. Returns the error that fails the run at once, or undefined when the error
 * is something else or the client had credentials before (then it is waited out like an S3 outage).
 */
export function noCredentialsError(s3: S3Client, bucket: string, error: unknown): PermanentJobError | undefined {
  if (!isCredentialsUnavailable(error) || !hasNoCredentialSource(s3)) return undefined;
  const { name, message } = error as { name: string; message?: string };
  return new PermanentJobError(
    `S3 credentials unavailable, and nothing gives this worker any (${name}: ${message ?? ''}): ` +
      'no task role and no AWS credentials are configured for it (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_ACCESS_KEY_ID … ' +
      'are unset) — waiting would not bring them. Give the worker its credentials, then requeue the run',
    S3_NO_CREDENTIALS_CODE,
    { bucket, cause: name },
    // It quotes the SDK's message.
    { internal: true },
  );
}

/**
 * Asks S3 whether it answers (HeadBucket, bounded like any request). Returns what it did instead (`timeout`, the
 * error's code or name) when that looks like S3 being unavailable (refused, reset, timeout, 5xx, no credentials), and undefined
 * otherwise: any other answer, even an error such as 403 or 404, is S3 answering. The job's signal's reason is thrown.
 */
export async function s3Silence(s3: S3Client, bucket: string, signal: AbortSignal, timeoutMs: number): Promise<string | undefined> {
  // S3 that accepts the connection and never answers is an outage too.
  const probe = new AbortController();
  const onAbort = () => probe.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => probe.abort(Object.assign(new Error(`HeadBucket gave no answer within ${timeoutMs} ms`), { name: 'TimeoutError' })), timeoutMs);
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal: probe.signal });
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (probe.signal.aborted) return 'timeout';
    // Never any credentials: no outage to wait for.
    const missing = noCredentialsError(s3, bucket, error);
    if (missing) throw missing;
    // No credentials to sign the probe with is no answer either (see isCredentialsUnavailable).
    if (isS3OutageError(error) || isCredentialsUnavailable(error)) return (error as { code?: string }).code ?? (error as { name?: string }).name ?? 'error';
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
  return undefined;
}


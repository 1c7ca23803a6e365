import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

export interface S3ClientOptions {
  region: string;
  /** A local S3-compatible server; undefined means AWS itself. */
  endpoint?: string | undefined;
  forcePathStyle?: boolean;
  /**
   * Explicit credentials (local servers), or a provider of them; undefined uses the SDK's default chain (task role on
   * ECS).
   */
  credentials?: { accessKeyId: string; secretAccessKey: string } | S3ClientConfig['credentials'] | undefined;
  maxAttempts?: number;
  /**
   * Checksums only where the API requires them, also against AWS: for a client that presigns URLs (a presigned PUT
   * carrying the SDK's default CRC32 parameters would demand a checksum header the uploader does not send).
   */
  checksumsWhenRequired?: boolean;
  /**
   * For the SDK's default chain: whether the environment names a source of credentials for it
   * (Config.awsCredentialsConfigured). Undefined counts as yes (explicit credentials, local servers).
   */
  credentialSourceConfigured?: boolean;
}

const watched = new WeakSet<S3Client>();
const signedBefore = new WeakSet<S3Client>();

/**
 * Notes the first request the client signs (idempotent): from then on it has had credentials, and a later failure to
 * get them (CredentialsProviderError: the task role's endpoint did not answer a refresh) is a hiccup, not a worker
 * without credentials at all (no task role, no variables), which the SDK reports with the same error.
 */
export function watchCredentials(s3: S3Client): void {
  if (watched.has(s3)) return;
  watched.add(s3);
  // The deserialize step runs after finalizeRequest, where the request is signed: reaching it means credentials were
  // obtained (an error answer of S3, ExpiredToken included, comes later still).
  s3.middlewareStack.add(
    (next) => (args) => {
      signedBefore.add(s3);
      return next(args);
    },
    { step: 'deserialize', name: 'credentialsObtained' },
  );
}

/** Whether the client signed a request before (watchCredentials): it has had credentials. */
export function hasHadCredentials(s3: S3Client): boolean {
  return signedBefore.has(s3);
}

/** Clients built without a source of credentials (createS3Client's credentialSourceConfigured: false). */
const withoutCredentialSource = new WeakSet<S3Client>();

/**
 * Whether a credentials error of this client can only mean it has none: it never signed a request, and nothing gives
 * it credentials (no source in the environment). A task whose role's endpoint is slow to answer at
 * start, or down for a while, has the source: its errors are waited out.
 */
export function hasNoCredentialSource(s3: S3Client): boolean {
  return withoutCredentialSource.has(s3) && !hasHadCredentials(s3);
}

/** The one place an S3 client is built, for AWS and for local S3-compatible servers alike. */
export function createS3Client(options: S3ClientOptions): S3Client {
  const custom = options.endpoint !== undefined;
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? custom,
    credentials: options.credentials,
    maxAttempts: options.maxAttempts ?? 3,
    // The SDK sets no request timeout of its own, and a request's own `requestTimeout` (the mass import gives each of
    // its requests MASS_IMPORT_REQUEST_TIMEOUT_MS) only logs a warning unless this is set: a request S3 never answers
    // then stays open for ever, with its body's buffer. No client-wide timeout: the client also streams objects that
    // are read slowly on purpose (a CSV import waiting for the database), which an idle timeout would cut.
    requestHandler: { throwOnRequestTimeout: true },
    // Since v3.729 the SDK adds a CRC32 checksum to every upload ("WHEN_SUPPORTED"); for a streaming body it does so
    // with `Content-Encoding: aws-chunked` framing and a trailing checksum header. AWS S3 decodes that framing, but
    // S3-compatible servers that predate it (s3rver, older MinIO/Ceph) store the framing inside the object, corrupting
    // it. Against a custom endpoint we therefore send checksums only where the API requires them (e.g.
    // DeleteObjects); against AWS we keep the SDK's default end-to-end integrity checks. Our own SHA-256 of every
    // imported file covers integrity either way.
    ...(custom || options.checksumsWhenRequired ? { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' } : {}),
  });
  watchCredentials(client);
  if (options.credentialSourceConfigured === false) withoutCredentialSource.add(client);
  return client;
}

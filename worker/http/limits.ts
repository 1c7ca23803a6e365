// The API server's limits and their defaults, apart from the server (server.ts) so that `bulk-import serve` can show
// them in its options without loading Fastify: every command of the CLI registers at start-up, a worker included.

export interface ApiLimits {
  /** Largest request body, bytes (a job payload is at most 256 KiB of JSON). */
  bodyLimitBytes: number;
  /** Requests per key (or per address without a key) per minute. */
  rateLimitPerMinute: number;
  /** Time to receive a whole request (headers and body); slow clients are cut off. */
  requestTimeoutMs: number;
  /** Presigned upload URLs expire after this long. */
  uploadExpirySeconds: number;
  /** Largest CSV upload, bytes. */
  uploadMaxBytes: number;
  /** How often a followed running job's progress is read for its event stream. */
  eventPollMs: number;
  /** SSE comment line sent this often so proxies keep an idle stream open. */
  eventKeepAliveMs: number;
  /**
   * How long a stream the server ended (its key revoked, its session over, the server closing) waits for its client to
   * read what was written, before its connection is cut: a client that reads nothing would hold it for good.
   */
  eventEndGraceMs: number;
  /**
   * Event streams one key (or one admin session's key) may hold open on this server process at once; the next is
   * `429 TOO_MANY_STREAMS`. A client that leaks streams (an EventSource per render, never closed) would otherwise
   * hold sockets and followed runs without end.
   */
  eventStreamsPerKey: number;
  /** Longest wait for S3 to tell a CSV upload's size at submit; then 503 S3_UNAVAILABLE. */
  s3HeadTimeoutMs: number;
}

export const DEFAULT_LIMITS: ApiLimits = {
  bodyLimitBytes: 512 * 1024,
  rateLimitPerMinute: 600,
  requestTimeoutMs: 30_000,
  uploadExpirySeconds: 300,
  uploadMaxBytes: 1024 ** 3,
  eventPollMs: 1_000,
  eventKeepAliveMs: 15_000,
  eventEndGraceMs: 10_000,
  eventStreamsPerKey: 100,
  s3HeadTimeoutMs: 10_000,
};

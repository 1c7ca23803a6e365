// IAM database authentication: the password of a new connection is a token signed with the task role's credentials
// (computed locally, no network call). RDS accepts a token for 15 minutes after it was made, and only to log in: a
// connection that is already open stays open after its token expires. So a token is made when a connection needs one
// and reused only while it has more than a safety margin left.

/** RDS accepts a token this long after it was signed. */
export const IAM_TOKEN_LIFETIME_MS = 15 * 60_000;
/** A token is not handed to a new connection in its last five minutes (clock skew, a slow TLS handshake). */
export const IAM_TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;

export interface IamTokenSourceOptions {
  hostname: string;
  port: number;
  username: string;
  region: string;
  /** Makes a token; defaults to @aws-sdk/rds-signer with the default credential chain. Tests pass a signer of their own. */
  sign?: () => Promise<string>;
  now?: () => number;
}

export class IamTokenSource {
  private current: { token: string; signedAt: number } | undefined;
  private signing: Promise<string> | undefined;
  private readonly sign: () => Promise<string>;
  private readonly now: () => number;
  /** Tokens signed so far (for tests and the debug log). */
  signed = 0;

  constructor(options: IamTokenSourceOptions) {
    // Loaded only when IAM authentication is on: the health check and the CLI start without the SDK.
    this.sign =
      options.sign ??
      (async () => {
        const { Signer } = await import('@aws-sdk/rds-signer');
        const signer = new Signer({ hostname: options.hostname, port: options.port, username: options.username, region: options.region });
        return signer.getAuthToken();
      });
    this.now = options.now ?? Date.now;
  }

  /** A token valid for at least the refresh margin; signs a new one when needed (concurrent callers share it). */
  async token(): Promise<string> {
    const current = this.current;
    if (current && this.now() - current.signedAt < IAM_TOKEN_LIFETIME_MS - IAM_TOKEN_REFRESH_MARGIN_MS) return current.token;
    this.signing ??= (async () => {
      const signedAt = this.now();
      try {
        const token = await this.sign();
        this.current = { token, signedAt };
        this.signed += 1;
        return token;
      } finally {
        this.signing = undefined;
      }
    })();
    return this.signing;
  }
}

/** A token source for the user, host and port of a Postgres URL. */
export function iamTokenSourceFor(databaseUrl: string, region: string): IamTokenSource {
  const url = new URL(databaseUrl);
  return new IamTokenSource({
    hostname: url.hostname,
    port: url.port ? Number(url.port) : 5432,
    username: decodeURIComponent(url.username),
    region,
  });
}

// Leader election for the queue gauges: the worker whose dedicated database session holds the gauge advisory lock
// publishes; the others ask again every interval. When the leader dies its session ends, Postgres drops the lock,
// and the next worker to ask becomes the leader.
import pg from 'pg';
import { connectionConfig, type DatabaseTarget } from '../db/connection.js';
import type { Logger } from '../logger.js';
import { releaseGaugeLeadership, tryAcquireGaugeLeadership } from '../queue/gauges.js';

export class GaugeLeadership {
  private session: pg.Client | undefined;
  private leading = false;

  constructor(
    private readonly database: DatabaseTarget,
    private readonly workerId: string,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * The session to read gauges on when this worker leads (taking the lead if it is free), else undefined. A broken
   * session is dropped (its lock goes with it) and the next call starts a new one.
   */
  async lead(): Promise<pg.Client | undefined> {
    try {
      const session = await this.connect();
      if (!this.leading) {
        this.leading = await tryAcquireGaugeLeadership(session);
        if (this.leading) this.log.info({ worker_id: this.workerId }, 'this worker now publishes the queue gauges');
      }
      return this.leading ? session : undefined;
    } catch (error) {
      await this.drop(error);
      throw error;
    }
  }

  private async connect(): Promise<pg.Client> {
    if (this.session) return this.session;
    const session = new pg.Client(connectionConfig(this.database, {
      application_name: 'bulk-import-gauges',
      // A leader cut off by the network must not keep the lock forever: keepalives (connectionConfig) end its dead
      // session on the server, and a timeout bounds every statement the publisher waits for.
      connectionTimeoutMillis: 10_000,
      query_timeout: 30_000,
    }));
    session.on('error', (error) => void this.drop(error));
    await session.connect();
    this.session = session;
    return session;
  }

  /** Forgets the session (and with it the lock); the next lead() reconnects. */
  async drop(reason?: unknown): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (this.leading) this.log.warn({ err: reason, worker_id: this.workerId }, 'lost the queue gauge leadership with its database session');
    this.leading = false;
    await session?.end().catch(() => {});
  }

  /** Hands the lead over (another worker takes it on its next round) and closes the session. */
  async close(): Promise<void> {
    const session = this.session;
    if (session && this.leading) await releaseGaugeLeadership(session).catch(() => {});
    this.leading = false;
    this.session = undefined;
    await session?.end().catch(() => {});
  }
}

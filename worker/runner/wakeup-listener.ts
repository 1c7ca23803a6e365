// LISTENs for wake-ups (new due jobs) and cancel requests on a dedicated connection. It only makes things faster:
// if the connection drops, polling still delivers every job, and the listener reconnects with backoff.
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { connectionConfig, type DatabaseTarget } from '../db/connection.js';
import type { DatabaseStatus } from '../db/database-status.js';
import type { Logger } from '../logger.js';
import { JOB_CANCEL_CHANNEL, JOBS_READY_CHANNEL } from '../queue/channels.js';

export interface WakeupEvents {
  ready: [kind: string];
  cancel: [jobId: number];
  /** After a (re)connect: notifications may have been missed, so poll now. */
  connected: [];
}

export class WakeupListener extends EventEmitter<WakeupEvents> {
  private client: pg.Client | undefined;
  private stopped = false;
  private reconnectDelayMs = 250;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly database: DatabaseTarget,
    private readonly log: Logger,
    private readonly status?: DatabaseStatus,
  ) {
    super();
  }

  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const startedAt = Date.now();
    const client = new pg.Client(
      connectionConfig(this.database, { application_name: 'bulk-import-listener', keepAlive: true, connectionTimeoutMillis: 15_000 }),
    );
    const lost = (error?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      client.removeAllListeners('notification');
      client.end().catch(() => {});
      if (!this.stopped) {
        if (!error || !this.status?.reportFailure(error, 'listener')) {
          this.log.warn({ err: error?.message }, 'wake-up listener lost its connection; polling continues, reconnecting');
        }
        this.scheduleReconnect();
      }
    };
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      await client.query(`LISTEN ${JOBS_READY_CHANNEL}; LISTEN ${JOB_CANCEL_CHANNEL}`);
    } catch (error) {
      client.removeAllListeners('error');
      client.on('error', () => {});
      await client.end().catch(() => {});
      if (!this.status?.reportFailure(error, 'listener', startedAt)) {
        this.log.warn({ err: (error as Error).message }, 'wake-up listener could not connect; polling continues');
      }
      this.scheduleReconnect();
      return;
    }
    client.on('notification', (message) => {
      if (message.channel === JOBS_READY_CHANNEL) this.emit('ready', message.payload ?? '');
      else if (message.channel === JOB_CANCEL_CHANNEL) this.emit('cancel', Number(message.payload));
    });
    this.client = client;
    this.reconnectDelayMs = 250;
    this.status?.reportSuccess(startedAt);
    this.emit('connected');
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    // Jittered: after a failover the listeners of a whole fleet must not reconnect in the same instant.
    const delay = this.reconnectDelayMs / 2 + Math.random() * (this.reconnectDelayMs / 2);
    this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, 30_000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    if (client) await client.end().catch(() => {});
  }
}

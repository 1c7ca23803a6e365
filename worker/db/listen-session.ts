// One dedicated connection that LISTENs on a few channels and reconnects, with jittered backoff, whenever it is lost.
// Every user of LISTEN in this process goes through it (the worker's wake-ups and cancels, the API's event streams,
// the API-key revocations). Notifications are a speed-up or a cache invalidation, never the only source of truth:
// while the session is down they are missed, so `onConnected` runs after every (re)connect — the caller catches up
// there (polls, or empties a cache) — and `onLost` runs when it goes down.
import pg from 'pg';
import { CONNECT_TIMEOUT_MS, connectionConfig, type DatabaseTarget } from './connection.js';
import type { Logger } from '../logger.js';

export interface ListenSessionOptions {
  database: DatabaseTarget;
  channels: readonly string[];
  /** application_name of the connection, as pg_stat_activity shows it. */
  applicationName: string;
  log: Logger;
  onNotification: (channel: string, payload: string) => void;
  /** After each (re)connect, LISTEN in place; `startedAt` is when this connection attempt began. */
  onConnected?: (startedAt: number) => void;
  /**
   * When an established session is lost (`startedAt` undefined) or an attempt fails (`startedAt` set). Returns true
   * when it has reported the failure itself, so the session logs no warning of its own.
   */
  onDown?: (error: unknown, startedAt: number | undefined) => boolean | void;
  /** The warning logged (with the error) when the session goes down; the caller says what still works. */
  downMessage: string;
  /** The ceiling of the reconnect backoff. Default 30 s. */
  maxReconnectDelayMs?: number;
}

const FIRST_RECONNECT_DELAY_MS = 250;

export class ListenSession {
  private client: pg.Client | undefined;
  private stopped = false;
  private reconnectDelayMs = FIRST_RECONNECT_DELAY_MS;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ListenSessionOptions) {}

  /** True while LISTEN is in place. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  /** Connects once; on failure it keeps retrying in the background (start never throws). */
  async start(): Promise<void> {
    await this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) await client.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const { database, channels, applicationName } = this.options;
    const startedAt = Date.now();
    const client = new pg.Client(connectionConfig(database, { application_name: applicationName, connectionTimeoutMillis: CONNECT_TIMEOUT_MS }));
    const lost = (error?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      client.removeAllListeners('notification');
      client.end().catch(() => {});
      if (this.stopped) return;
      this.down(error, undefined);
    };
    client.on('error', lost);
    client.on('end', () => lost());
    // Before LISTEN, so nothing delivered right after it is dropped.
    client.on('notification', (message) => {
      if (this.client === client) this.options.onNotification(message.channel, message.payload ?? '');
    });
    try {
      await client.connect();
      await client.query(channels.map((channel) => `LISTEN ${channel}`).join('; '));
    } catch (error) {
      client.removeAllListeners();
      client.on('error', () => {});
      await client.end().catch(() => {});
      if (!this.stopped) this.down(error, startedAt);
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.reconnectDelayMs = FIRST_RECONNECT_DELAY_MS;
    this.options.onConnected?.(startedAt);
  }

  private down(error: unknown, startedAt: number | undefined): void {
    if (this.options.onDown?.(error, startedAt) !== true) {
      this.options.log.warn({ err: error instanceof Error ? error.message : undefined }, this.options.downMessage);
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    // Jittered: after a failover the sessions of a whole fleet must not reconnect in the same instant.
    const delay = this.reconnectDelayMs / 2 + Math.random() * (this.reconnectDelayMs / 2);
    this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, this.options.maxReconnectDelayMs ?? 30_000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }
}

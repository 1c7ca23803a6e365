// LISTENs for wake-ups (new due jobs) and cancel requests on a dedicated connection. It only makes things faster:
// if the connection drops, polling still delivers every job, and the session reconnects with backoff.
import { EventEmitter } from 'node:events';
import type { DatabaseTarget } from '../db/connection.js';
import type { DatabaseStatus } from '../db/database-status.js';
import { ListenSession } from '../db/listen-session.js';
import type { Logger } from '../logger.js';
import { JOB_CANCEL_CHANNEL, JOBS_READY_CHANNEL } from '../queue/channels.js';

export interface WakeupEvents {
  ready: [kind: string];
  cancel: [jobId: number];
  /** After a (re)connect: notifications may have been missed, so poll now. */
  connected: [];
}

export class WakeupListener extends EventEmitter<WakeupEvents> {
  private readonly session: ListenSession;

  constructor(database: DatabaseTarget, log: Logger, status?: DatabaseStatus) {
    super();
    this.session = new ListenSession({
      database,
      log,
      channels: [JOBS_READY_CHANNEL, JOB_CANCEL_CHANNEL],
      applicationName: 'bulk-import-listener',
      downMessage: 'wake-up listener is not connected; polling continues, reconnecting',
      onNotification: (channel, payload) => {
        if (channel === JOBS_READY_CHANNEL) this.emit('ready', payload);
        else if (channel === JOB_CANCEL_CHANNEL) this.emit('cancel', Number(payload));
      },
      onConnected: (startedAt) => {
        status?.reportSuccess(startedAt);
        this.emit('connected');
      },
      // A database that is down is reported once by DatabaseStatus, not by every session.
      onDown: (error, startedAt) => error !== undefined && status?.reportFailure(error, 'listener', startedAt) === true,
    });
  }

  start(): Promise<void> {
    return this.session.start();
  }

  stop(): Promise<void> {
    return this.session.stop();
  }
}

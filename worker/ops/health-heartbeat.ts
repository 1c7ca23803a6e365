// The liveness signal the container health check reads: the worker touches a file on every turn of its poll loop
// (throttled), and scripts/healthcheck.ts fails once the file is older than HEALTH_MAX_AGE_MS. A hung loop, a
// blocked event loop or a frozen process all stop the touches.
//
// The file's content says what the worker knows about its database (see HeartbeatContent): while the database is away
// the loop keeps turning and the check stays healthy (replacing every task of the fleet during a failover would only
// add churn: the new tasks would wait for the same database), but a database that refuses the worker's configuration
// (authentication, a missing schema) makes the check fail, since only a fix or a rollback helps then.
import { rm, utimes, writeFile } from 'node:fs/promises';
import type { DatabaseHealth, DatabaseStatus } from '../db/database-status.js';
import type { Logger } from '../logger.js';
import type { Worker } from '../runner/worker.js';

export interface HealthHeartbeatOptions {
  file: string;
  /** The healthcheck's threshold; touches come at least four times within it (and at most once a second). */
  maxAgeMs: number;
}

/** What the heartbeat file holds (one JSON line); scripts/healthcheck.ts reads it. */
export interface HeartbeatContent {
  pid: number;
  database: DatabaseHealth;
}

/** Parses a heartbeat file's text; files of older workers (just a pid) read as a database that is ok. */
export function parseHeartbeatContent(text: string): HeartbeatContent | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<HeartbeatContent>;
    if (typeof parsed.pid === 'number' && parsed.database && typeof parsed.database.state === 'string') {
      return parsed as HeartbeatContent;
    }
  } catch {
    // not JSON: an older format
  }
  return undefined;
}

export class HealthHeartbeat {
  private content: HeartbeatContent = { pid: process.pid, database: { state: 'ok' } };
  /** Bumped when the content changes; a touch writes the file (not only its times) until it has written this one. */
  private version = 1;
  private writtenVersion = 0;
  private readonly minIntervalMs: number;
  private lastTouch = 0;
  private touching: Promise<void> | undefined;
  private failing = false;
  private stopped = false;
  private readonly onLoop = () => this.beat();
  private detach: () => void = () => {};

  constructor(
    private readonly options: HealthHeartbeatOptions,
    private readonly log: Logger,
  ) {
    this.minIntervalMs = Math.min(1_000, Math.floor(options.maxAgeMs / 4));
  }

  /** Touches the file on the worker's loop turns until stop(). */
  attach(worker: Worker, databaseStatus?: DatabaseStatus): this {
    worker.on('loop', this.onLoop);
    const onDatabase = (health: DatabaseHealth) => {
      this.content = { pid: process.pid, database: health };
      this.version += 1;
      this.lastTouch = 0;
      this.beat();
    };
    databaseStatus?.on('change', onDatabase);
    this.detach = () => {
      worker.off('loop', this.onLoop);
      databaseStatus?.off('change', onDatabase);
    };
    return this;
  }

  /** Touches the file unless it was touched less than the minimum interval ago (or a touch is under way). */
  beat(): void {
    const now = Date.now();
    if (this.stopped || this.touching || now - this.lastTouch < this.minIntervalMs) return;
    this.lastTouch = now;
    this.touching = this.touch(new Date(now)).finally(() => {
      this.touching = undefined;
    });
  }

  private async touch(at: Date): Promise<void> {
    try {
      let written = false;
      if (this.writtenVersion === this.version) {
        try {
          await utimes(this.options.file, at, at);
          written = true;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        }
      }
      if (!written) {
        const version = this.version;
        await writeFile(this.options.file, `${JSON.stringify(this.content)}\n`);
        await utimes(this.options.file, at, at);
        this.writtenVersion = version;
      }
      if (this.failing) this.log.info({ file: this.options.file }, 'health heartbeat file writable again');
      this.failing = false;
    } catch (error) {
      // Logged once per outage: the healthcheck will report the stale file; the worker itself keeps running.
      if (!this.failing) this.log.error({ err: error, file: this.options.file }, 'cannot touch the health heartbeat file');
      this.failing = true;
    }
  }

  /** Stops touching and removes the file: a stopped worker is not healthy. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.detach();
    await this.touching;
    await rm(this.options.file, { force: true }).catch(() => {});
  }
}

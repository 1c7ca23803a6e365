// The round's `bulk-import worker` processes: started, killed with SIGKILL and replaced by the suite, and watched for
// what the suite did not do — a worker exiting on its own, or printing "Unhandled 'error' event". Each process's
// stdout and stderr go to a log file of the round (named in violations).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Rng } from './rng.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI_ENTRY = `${ROOT}bin/bulk-import.js`;

/** Short timings so a lost lease is rescued within seconds, and outages are retried quickly. */
export const CHAOS_WORKER_TIMINGS: Record<string, string> = {
  WORKER_LEASE_MS: '4000',
  WORKER_HEARTBEAT_MS: '500',
  WORKER_RESCUE_INTERVAL_MS: '500',
  WORKER_POLL_INTERVAL_MS: '200',
  WORKER_SHUTDOWN_GRACE_MS: '3000',
  WORKER_CONCURRENCY: '4',
  RETRY_BACKOFF_BASE_MS: '200',
  RETRY_BACKOFF_MAX_MS: '2000',
  DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '2000',
  DATABASE_STARTUP_TIMEOUT_MS: '60000',
  MASS_IMPORT_REQUEST_TIMEOUT_MS: '4000',
  S3_STALL_TIMEOUT_MS: '4000',
  MASS_IMPORT_CONCURRENCY: '4',
  MASS_IMPORT_MULTIPART_THRESHOLD_BYTES: String(5 * 1024 * 1024),
  CSV_FINALIZE_CHUNK_SIZE: '100',
  JOB_MAX_ATTEMPTS: '25',
};

/** Markers of a process that lost control of an error, whether or not it died of it. */
const STDERR_ALARMS = [/Unhandled 'error' event/, /UnhandledPromiseRejection/, /uncaughtException/i];

interface Member {
  name: string;
  child: ChildProcess;
  expectedExit: boolean;
  started: boolean;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  exited: Promise<void>;
  logFile: string;
  recentStderr: string[];
}

export interface FleetOptions {
  env: Record<string, string>;
  logDir: string;
  /** Prefix of worker ids and log files, e.g. "r3-noop". */
  name: string;
}

export class WorkerFleet {
  private readonly members: Member[] = [];
  private readonly streams: WriteStream[] = [];
  private serial = 0;
  /** Process-level violations: unexpected exits and alarming stderr lines. */
  readonly violations: string[] = [];
  unexpectedDeaths = 0;
  killed = 0;

  constructor(private readonly options: FleetOptions) {}

  get live(): Member[] {
    return this.members.filter((member) => member.exit === undefined && !member.expectedExit);
  }

  spawn(): Member {
    this.serial += 1;
    const name = `${this.options.name}-w${this.serial}`;
    const logFile = join(this.options.logDir, `${name}.log`);
    const log = createWriteStream(logFile);
    this.streams.push(log);
    const child = spawn(process.execPath, [CLI_ENTRY, 'worker'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        LOG_FORMAT: 'json',
        LOG_LEVEL: 'info',
        HEALTH_HEARTBEAT_FILE: join(this.options.logDir, `${name}.heartbeat`),
        ...CHAOS_WORKER_TIMINGS,
        ...this.options.env,
        // A debugging aid: e.g. --import of a script that reports the handles keeping a stopped worker alive.
        ...(process.env.CHAOS_WORKER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.CHAOS_WORKER_NODE_OPTIONS } : {}),
        WORKER_ID: name,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const member: Member = {
      name,
      child,
      expectedExit: false,
      started: false,
      logFile,
      recentStderr: [],
      exited: new Promise<void>((resolve) => {
        child.once('exit', (code, signal) => {
          member.exit = { code, signal };
          if (!member.expectedExit) {
            this.unexpectedDeaths += 1;
            this.violations.push(
              `worker ${name} exited on its own (code ${code}, signal ${signal}); last stderr: ${member.recentStderr.slice(-3).join(' | ') || '-'} (log: ${logFile})`,
            );
          }
          resolve();
        });
      }),
    };
    createInterface({ input: child.stdout! }).on('line', (text) => {
      log.write(`${text}\n`);
      if (!member.started && text.includes('"worker started"')) member.started = true;
      this.scan(member, text);
    });
    createInterface({ input: child.stderr! }).on('line', (text) => {
      log.write(`[stderr] ${text}\n`);
      member.recentStderr.push(text);
      if (member.recentStderr.length > 20) member.recentStderr.shift();
      this.scan(member, text);
    });
    this.members.push(member);
    return member;
  }

  private scan(member: Member, text: string): void {
    for (const alarm of STDERR_ALARMS) {
      if (alarm.test(text)) {
        this.violations.push(`worker ${member.name} printed ${JSON.stringify(text.slice(0, 300))} (log: ${member.logFile})`);
        return;
      }
    }
  }

  /** Waits (event-driven: each worker's "worker started" line) until every live worker has started. */
  async waitStarted(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.live.some((member) => !member.started)) {
      if (Date.now() > deadline) throw new Error(`workers did not start within ${timeoutMs} ms`);
      const gone = this.members.find((member) => member.exit !== undefined && !member.started && !member.expectedExit);
      if (gone) throw new Error(`worker ${gone.name} exited before it started: ${gone.recentStderr.slice(-2).join(' | ')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** kill -9 of a random live worker, then a replacement. Returns the victim's name. */
  async killOneAndReplace(rng: Rng): Promise<string> {
    const victims = this.live;
    if (victims.length === 0) {
      this.spawn();
      return 'none alive (started one)';
    }
    const victim = rng.pick(victims);
    victim.expectedExit = true;
    victim.child.kill('SIGKILL');
    await victim.exited;
    this.killed += 1;
    this.spawn();
    return victim.name;
  }

  /** SIGTERM to every live worker; a worker that does not exit 0 within the grace (plus slack) is a violation. */
  async stopAll(timeoutMs = 20_000): Promise<void> {
    const stopping = this.live;
    for (const member of stopping) {
      member.expectedExit = true;
      member.child.kill('SIGTERM');
    }
    await Promise.all(
      stopping.map(async (member) => {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          member.exited.then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), timeoutMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          this.violations.push(`worker ${member.name} did not exit within ${timeoutMs} ms of SIGTERM (log: ${member.logFile})`);
          member.child.kill('SIGKILL');
          await member.exited;
        } else if (member.exit && member.exit.code !== 0 && !(member.exit.signal === 'SIGTERM' && !member.started)) {
          // (A replacement still loading its modules when the round ends has no handler yet and dies of the signal
          // itself: it held nothing, so that is no violation.)
          this.violations.push(
            `worker ${member.name} exited with code ${member.exit.code} (signal ${member.exit.signal}) after SIGTERM (log: ${member.logFile})`,
          );
        }
      }),
    );
  }

  /** Kills whatever is still running (a round that failed half-way) and closes the log files. */
  async dispose(): Promise<void> {
    for (const member of this.members) {
      if (member.exit === undefined) {
        member.expectedExit = true;
        member.child.kill('SIGKILL');
      }
    }
    await Promise.all(this.members.map((member) => member.exited));
    await Promise.all(this.streams.map((stream) => new Promise<void>((resolve) => stream.end(resolve))));
  }
}

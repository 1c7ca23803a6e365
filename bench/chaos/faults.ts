// The faults a round injects, one at a time, at random moments of its jobs' progress. Each injector leaves the
// system whole again when it returns (Postgres thawed, S3 started, the proxy passing everything).
import type { Fault } from '../../test/support/faulty-s3-proxy.js';
import type { ChaosEnvironment, RoundResources } from './environment.js';
import type { Rng } from './rng.js';
import type { WorkerFleet } from './workers.js';

export const FAULT_TYPES = ['kill-worker', 'pg-restart', 'pg-pause', 'pg-terminate', 's3-restart', 's3-faults'] as const;
export type FaultType = (typeof FAULT_TYPES)[number];

export interface FaultContext {
  env: ChaosEnvironment;
  round: RoundResources;
  fleet: WorkerFleet;
  rng: Rng;
  /** How long Postgres stays frozen (SIGSTOP) in a pg-pause. */
  pauseMs: number;
  quick: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Injects one fault and undoes it; returns a line that says what was done. */
export async function injectFault(type: FaultType, context: FaultContext): Promise<string> {
  const { env, rng } = context;
  switch (type) {
    case 'kill-worker': {
      const victim = await context.fleet.killOneAndReplace(rng);
      return `kill -9 ${victim}, replacement started`;
    }
    case 'pg-restart': {
      const downMs = rng.int(100, context.quick ? 800 : 2_000);
      await env.postgres.restart({ downMs });
      return `Postgres restarted (down ${downMs} ms)`;
    }
    case 'pg-pause': {
      await env.postgres.pause();
      try {
        await sleep(context.pauseMs);
      } finally {
        await env.postgres.resume();
      }
      return `Postgres paused ${context.pauseMs} ms`;
    }
    case 'pg-terminate': {
      const { rows } = await context.round.pool.query<{ pid: number; application_name: string }>(
        `SELECT pid, application_name FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'bulk-import-%'`,
      );
      const chosen = rows.filter(() => rng.chance(0.5));
      if (chosen.length === 0 && rows.length > 0) chosen.push(rng.pick(rows));
      for (const session of chosen) await context.round.pool.query('SELECT pg_terminate_backend($1)', [session.pid]);
      const names = chosen.map((session) => session.application_name).sort();
      return `pg_terminate_backend of ${chosen.length}/${rows.length} worker sessions (${names.join(', ') || 'none'})`;
    }
    case 's3-restart': {
      const downMs = rng.int(100, context.quick ? 800 : 2_000);
      await env.s3Server.stop();
      try {
        await sleep(downMs);
      } finally {
        await env.s3Server.start();
      }
      return `S3 server restarted (down ${downMs} ms)`;
    }
    case 's3-faults': {
      const windowMs = rng.int(1_000, context.quick ? 2_000 : 4_000);
      const probability = rng.pick([0.2, 0.4, 0.7]);
      const kinds: Fault[] = ['slowdown', 'internal', 'reset', 'stall'];
      // Each request draws from its own generator forked off the round's (request arrival order is timing).
      const draw = rng.fork(rng.int(0, 1_000_000));
      const seen: Record<string, number> = {};
      env.proxy.decide = () => {
        if (!draw.chance(probability)) return 'pass';
        const fault = draw.pick(kinds);
        seen[fault] = (seen[fault] ?? 0) + 1;
        return fault;
      };
      try {
        await sleep(windowMs);
      } finally {
        env.proxy.decide = () => 'pass';
      }
      const summary = Object.entries(seen).map(([fault, n]) => `${fault} ${n}`).join(', ') || 'no request hit';
      return `S3 faults for ${windowMs} ms at p=${probability} (${summary})`;
    }
  }
}

// A gate on one statement of a worker, to kill the worker at an exact point: a BEFORE ROW trigger that takes an
// advisory lock this test's own session holds, so the worker's statement waits right there (the steps before it
// committed, the statement and its transaction not). blocked() resolves once a session waits at the gate;
// open() lets it (and every later statement) through and drops the trigger.
//
// Kill the worker while it waits, then open the gate: the dead worker's backend finishes the gated statement inside
// its transaction, finds its client gone and rolls the transaction back, as Postgres does for any client that dies
// mid-transaction. (The statement must run in an explicit transaction: a lone autocommit statement would commit.)
import type { PoolClient } from '../../worker/db/pool.js';
import type { TestEnvironment } from '../harness.js';
import { waitFor } from './in-process-worker.js';

/** The first key of every gate's advisory lock (pg_locks.classid); the second (objid) tells gates apart. */
const GATE_NAMESPACE = 0x6761_7465; // "gate"
let gates = 0;

export interface GateOptions {
  /** The table whose UPDATE is held. */
  table: string;
  /** The trigger's WHEN condition (OLD and NEW): the statement to hold. */
  when: string;
}

export interface StatementGate {
  /** Resolves with the backend pid of the session waiting at the gate, once there is one. */
  blocked(timeoutMs?: number): Promise<number>;
  /** Lets every statement through and drops the trigger (again: nothing). */
  open(): Promise<void>;
}

/** Holds the matching UPDATEs of `table` until open(): the lock is taken before the trigger exists. */
export async function gateUpdates(env: TestEnvironment, options: GateOptions): Promise<StatementGate> {
  gates += 1;
  const key = gates;
  const name = `crash_window_gate_${process.pid}_${key}`;
  const holder: PoolClient = await env.pool.connect();
  let opened = false;
  try {
    await holder.query('SELECT pg_advisory_lock($1, $2)', [GATE_NAMESPACE, key]);
    await env.pool.query(
      `CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN PERFORM pg_advisory_xact_lock(${GATE_NAMESPACE}, ${key}); RETURN NEW; END $$`,
    );
    await env.pool.query(
      `CREATE TRIGGER ${name} BEFORE UPDATE ON ${options.table} FOR EACH ROW WHEN (${options.when}) EXECUTE FUNCTION ${name}()`,
    );
  } catch (error) {
    holder.release(error as Error);
    throw error;
  }
  return {
    blocked: (timeoutMs = 60_000) =>
      waitFor(async () => {
        const { rows } = await env.pool.query<{ pid: number }>(
          `SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
           WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted
             AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.objsubid = 2`,
          [GATE_NAMESPACE, key],
        );
        return rows[0]?.pid;
      }, timeoutMs, 20),
    async open() {
      if (opened) return;
      opened = true;
      // Unlock first: the trigger cannot be dropped while a statement waits inside it.
      try {
        await holder.query('SELECT pg_advisory_unlock($1, $2)', [GATE_NAMESPACE, key]);
      } finally {
        holder.release();
      }
      await env.pool.query(`DROP TRIGGER IF EXISTS ${name} ON ${options.table}`);
      await env.pool.query(`DROP FUNCTION IF EXISTS ${name}()`);
    },
  };
}

// Which committed transactions a statement saw: Postgres's snapshot as pg_current_snapshot()::text gives it
// (`xmin:xmax:xip,…`), and the test of a transaction id (pg_current_xact_id()::text) against it. A transaction is
// visible — its writes were in what the statement read — when it is older than every transaction running then (below
// xmin), or below xmax (one past the newest that had ended) and not among those running (xip).

export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  running: ReadonlySet<bigint>;
}

export function parseSnapshot(text: string): Snapshot {
  const match = /^(\d+):(\d+):([\d,]*)$/.exec(text);
  if (!match) throw new Error(`not a snapshot: ${JSON.stringify(text)}`);
  return {
    xmin: BigInt(match[1]!),
    xmax: BigInt(match[2]!),
    running: new Set(match[3] ? match[3].split(',').map((xid) => BigInt(xid)) : []),
  };
}

/** Whether the committed transaction `xid` (as text) was visible to `snapshot`. */
export function sawTransaction(snapshot: Snapshot, xid: string): boolean {
  const id = BigInt(xid);
  return id < snapshot.xmin || (id < snapshot.xmax && !snapshot.running.has(id));
}

// `bulk-import serve` as the real process through a Postgres restart (every session terminated, as in an RDS
// failover): the process lives, /readyz says 503 while the database is away and 200 once it is back, and the API
// answers again with the same key — its pool, its key cache's LISTEN session and its event hub all reconnect by
// themselves. A run's event stream opened before the restart hears the run's change made after it.
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { cancelJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { runCliJson } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { openEvents } from './support/sse-client.js';
import { startServeProcess } from './support/serve-process.js';

const env = useTestEnvironment({ ownPostgres: true });
const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

describe('bulk-import serve through a database restart', () => {
  it('lives, answers 503 on /readyz while the database is away, and serves the same key once it is back', async () => {
    const { key } = await runCliJson<{ key: string }>(env, ['api-keys', 'create', '--name', 'ops', '--role', 'operator']);
    const { child, address, stderr } = await startServeProcess(env);
    children.push(child);
    let exitCode: number | null | undefined;
    child.once('exit', (code) => (exitCode = code));
    const get = (path: string) => fetch(`${address}${path}`, { headers: { authorization: `Bearer ${key}` } });
    expect((await get('/v1/jobs')).status).toBe(200);

    const { job } = await submitJob(env.pool, { kind: 'noop', payload: {} });
    const stream = await openEvents({ url: address }, job.id, key);
    await stream.waitFor((event) => event.event === 'snapshot');

    await env.postgres!.stopServer();
    const away = await get('/readyz');
    expect(away.status).toBe(503);
    await env.postgres!.startServer();

    await waitFor(async () => (await get('/readyz')).status === 200, 60_000, 100);
    await waitFor(async () => (await get('/v1/jobs')).status === 200, 60_000, 100);
    const listed = (await (await get('/v1/jobs')).json()) as { jobs: Array<{ id: number }> };
    expect(listed.jobs.map((run) => run.id)).toContain(job.id);
    // The event hub listens again: a change made after the restart reaches the stream opened before it.
    await waitFor(async () => (await cancelJob(env.pool, job.id).then(() => true, () => false)) || undefined, 60_000, 100);
    await stream.waitFor((event) => event.event === 'state' && (event.data as { state?: string }).state === 'canceled', 60_000);
    stream.close();

    expect(exitCode).toBeUndefined();
    expect(stderr.join('')).not.toMatch(/Unhandled 'error' event|Connection terminated unexpectedly/);
    child.kill('SIGTERM');
  });
});

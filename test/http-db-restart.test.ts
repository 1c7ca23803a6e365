// `bulk-import serve` as the real process through a Postgres restart (every session terminated, as in an RDS
// failover): the process lives, /readyz says 503 while the database is away and 200 once it is back, and the API
// answers again with the same key — its pool, its key cache's LISTEN session and its event hub all reconnect by
// themselves. A run's event stream opened before the restart hears the run's change made after it.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { cancelJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { runCliJson } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { openEvents } from './support/sse-client.js';
import { CLI_ENTRY } from './support/worker-processes.js';

const env = useTestEnvironment({ ownPostgres: true });
const children: Array<ReturnType<typeof spawn>> = [];
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

describe('bulk-import serve through a database restart', () => {
  it('lives, answers 503 on /readyz while the database is away, and serves the same key once it is back', async () => {
    const { key } = await runCliJson<{ key: string }>(env, ['api-keys', 'create', '--name', 'ops', '--role', 'operator']);
    const child = spawn(process.execPath, [CLI_ENTRY, 'serve', '--port', '0', '--host', '127.0.0.1'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env.processEnv, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let exitCode: number | null | undefined;
    child.once('exit', (code) => (exitCode = code));
    const stderr: string[] = [];
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    const lines: string[] = [];
    const address = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        lines.push(line);
        const parsed = JSON.parse(line) as { msg: string; address?: string };
        if (parsed.msg === 'API listening') resolve(parsed.address!);
      });
      child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${lines.join('\n')}`)));
    });
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

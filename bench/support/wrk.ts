// wrk (the Debian package) as a load generator: closed-loop HTTP load from a C program on one thread, so that on a
// small machine the generator takes little of the CPU the server and the database share (the Node generator of
// bench:api spent 0.07–0.34 ms of CPU per request, wrk 0.03–0.06). The paths to request are given as a
// list (random ids, cursors) that the script walks round; latency percentiles, counts and wrk's own CPU time come
// back from its `done` hook as one JSON line.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackage } from './debian-package.js';

const exec = promisify(execFile);
const WRK = '/usr/bin/wrk';

// args: the file of paths, then the bearer key (so that the key is not in the process list as a -H option).
const SCRIPT = `
local paths = {}
local next_path = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  wrk.headers["Authorization"] = "Bearer " .. args[2]
end
request = function()
  next_path = next_path % #paths + 1
  return wrk.format("GET", paths[next_path])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_RESULT {"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"non2xx":%d,"socketErrors":%d,"cpuSeconds":%.3f}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout, os.clock()))
end
`;

/** What a run of wrk measured; latencies and CPU in milliseconds. */
export interface WrkResult {
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
  /** Answers other than 2xx/3xx, plus connect, read, write errors and timeouts. */
  failures: number;
  /** wrk's own CPU time (all its threads). */
  cpuMs: number;
}

/** True when wrk is there (installed with apt-get if missing and allowed). */
export function ensureWrk(log: (line: string) => void): Promise<boolean> {
  return ensureDebianPackage('wrk', WRK, 'The wrk load generator', log);
}

/** Keeps `connections` connections to `base` busy for `seconds`, each request one of `paths` in turn. */
export async function runWrk(options: { base: string; key: string; paths: string[]; connections: number; seconds: number }): Promise<WrkResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-wrk-'));
  try {
    await writeFile(join(dir, 'paths.txt'), `${options.paths.join('\n')}\n`);
    await writeFile(join(dir, 'script.lua'), SCRIPT);
    const { stdout } = await exec(WRK, [
      '--threads', '1', '--connections', String(options.connections), '--duration', `${options.seconds}s`, '--timeout', '10s',
      '--script', join(dir, 'script.lua'), options.base, '--', join(dir, 'paths.txt'), options.key,
    ]);
    const line = stdout.split('\n').find((l) => l.startsWith('WRK_RESULT '));
    if (!line) throw new Error(`wrk printed no result:\n${stdout}`);
    const r = JSON.parse(line.slice('WRK_RESULT '.length)) as { requests: number; durationUs: number; p50Us: number; p99Us: number; non2xx: number; socketErrors: number; cpuSeconds: number };
    return { requests: r.requests, seconds: r.durationUs / 1e6, p50: r.p50Us / 1000, p99: r.p99Us / 1000, failures: r.non2xx + r.socketErrors, cpuMs: r.cpuSeconds * 1000 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

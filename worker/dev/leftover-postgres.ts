// A persistent local data directory may still be served by the Postgres of an earlier `bulk-import local` that was
// killed (kill -9 of the CLI leaves its Postgres child running, holding postmaster.pid and the data directory).
// Before starting its own server, a local run stops that leftover with a fast shutdown. Only a process whose command
// line names this very data directory is signalled; Linux only (elsewhere the start fails with a clear message).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

async function commandLine(pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0/g, ' ');
  } catch {
    return undefined;
  }
}

/** Returns true when a leftover postmaster was found and stopped. */
export async function stopLeftoverPostmaster(dataDir: string, timeoutMs = 20_000): Promise<boolean> {
  const pidFile = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(pidFile?.split('\n')[0]);
  if (!Number.isSafeInteger(pid) || pid <= 1) return false;
  const command = await commandLine(pid);
  if (!command || !command.includes(dataDir) || !/postgres/.test(command)) return false;
  process.kill(pid, 'SIGINT'); // Postgres' "fast" shutdown: ends sessions, checkpoints, exits.
  const deadline = Date.now() + timeoutMs;
  while ((await commandLine(pid)) !== undefined) {
    if (Date.now() > deadline) throw new Error(`a leftover Postgres (pid ${pid}) still serves ${dataDir}; stop it, then run again`);
    await sleep(100);
  }
  return true;
}

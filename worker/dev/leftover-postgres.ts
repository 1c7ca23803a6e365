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

/** The parent process id of `pid` (/proc/<pid>/stat: the field after the parenthesised command name). */
async function parentOf(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isSafeInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Returns true when a leftover postmaster was found and stopped. A postmaster that a live `bulk-import` process
 * started (its parent, or that one's) is no leftover: another `local` (a `local --serve` in another shell) is using the directory, and stopping
 * its database would leave that one answering 503 without a word. That is refused, naming it.
 */
export async function stopLeftoverPostmaster(dataDir: string, timeoutMs = 20_000): Promise<boolean> {
  const pidFile = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(pidFile?.split('\n')[0]);
  if (!Number.isSafeInteger(pid) || pid <= 1) return false;
  const command = await commandLine(pid);
  if (!command || !command.includes(dataDir) || !/postgres/.test(command)) return false;
  // Its parent, or the parent's parent (as root the server runs under a wrapper that switches to the postgres user).
  let ancestor = await parentOf(pid);
  for (let depth = 0; depth < 4 && ancestor !== undefined && ancestor > 1; depth += 1) {
    const owner = await commandLine(ancestor);
    if (owner && /bulk-import/.test(owner)) {
      throw new Error(
        `the database in ${dataDir} is in use by another running bulk-import (pid ${ancestor}: ${owner.trim()}); stop ` +
          'that one first, or give this run a --state-dir of its own',
      );
    }
    ancestor = await parentOf(ancestor);
  }
  process.kill(pid, 'SIGINT'); // Postgres' "fast" shutdown: ends sessions, checkpoints, exits.
  const deadline = Date.now() + timeoutMs;
  while ((await commandLine(pid)) !== undefined) {
    if (Date.now() > deadline) throw new Error(`a leftover Postgres (pid ${pid}) still serves ${dataDir}; stop it, then run again`);
    await sleep(100);
  }
  return true;
}

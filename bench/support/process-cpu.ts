// CPU time of processes, from /proc (Linux): what a benchmark charges to the server, the database or a worker.
import { readdirSync, readFileSync } from 'node:fs';

/** CPU time (user + system) a process has used, in milliseconds. Throws when the process is gone. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** CPU time (user + system, ms) of every process whose command line and pid `match` accepts. */
export function matchingProcessesCpuMs(match: (cmdline: string, pid: number) => boolean): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (match(readFileSync(`/proc/${entry}/cmdline`, 'utf8'), Number(entry))) total += processCpuMs(Number(entry));
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return total;
}

const isPostgres = (cmdline: string) => cmdline.startsWith('postgres:') || cmdline.includes('/bin/postgres');

/** CPU time (ms) of every Postgres process on the machine: the server and its backends (benches run alone). */
export function postgresCpuMs(): number {
  return matchingProcessesCpuMs(isPostgres);
}

// CPU time of processes, from /proc (Linux): what a benchmark charges to the server, the database or a worker.
import { readdirSync, readFileSync } from 'node:fs';

/** CPU time (user + system) a process has used, in milliseconds. Throws when the process is gone. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** CPU time (user + system, ms) of every process whose command line and pid `match` accepts, by pid. */
function matchingProcessesCpu(match: (cmdline: string, pid: number) => boolean): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (match(readFileSync(`/proc/${entry}/cmdline`, 'utf8'), Number(entry))) cpu.set(Number(entry), processCpuMs(Number(entry)));
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return cpu;
}

/**
 * CPU used by a set of processes since the meter was made, process by process: a process that ends (a Postgres
 * backend, an autovacuum worker) keeps what it used up to the last sample() and takes nothing else with it. (A sum
 * read before and after went negative when an autovacuum worker ended in between.)
 */
export class CpuMeter {
  private readonly start: Map<number, number>;
  private readonly last: Map<number, number>;

  constructor(private readonly match: (cmdline: string, pid: number) => boolean) {
    this.start = matchingProcessesCpu(match);
    this.last = new Map(this.start);
  }

  /** Reads every matching process now; call it often while processes come and go. */
  sample(): void {
    for (const [pid, ms] of matchingProcessesCpu(this.match)) this.last.set(pid, ms);
  }

  /** Milliseconds used since the meter was made (samples once more first). */
  elapsedMs(): number {
    this.sample();
    let total = 0;
    for (const [pid, ms] of this.last) total += ms - (this.start.get(pid) ?? 0);
    return total;
  }
}

const isPostgres = (cmdline: string) => cmdline.startsWith('postgres:') || cmdline.includes('/bin/postgres');

/** A CpuMeter of every Postgres process on the machine: the server, its backends and workers (benches run alone). */
export function postgresCpuMeter(): CpuMeter {
  return new CpuMeter(isPostgres);
}

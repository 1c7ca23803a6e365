// The comparison table: best of the rounds per system and figure, and our ratio to the best peer.

export interface BenchSettings {
  jobs: number;
  singleEnqueues: number;
  latencySamples: number;
  concurrency: number;
  rounds: number;
}

export interface QueueBenchResult {
  system: string;
  describe: string;
  singleEnqueueRate: number;
  bulkEnqueueRate: number;
  /** Jobs/s from the first handler call to the last. */
  throughput: number;
  /** Jobs/s from worker start until every job is recorded complete in the database. */
  throughputToComplete: number;
  latencyP50: number;
  latencyP99: number;
  duplicates: number;
  missing: number;
}

const OURS = 'bulk-import-worker';
const OURS_QUIET = 'ours, notifications off';
const PEERS = ['graphile-worker', 'pg-boss'];

type Figure = { key: keyof QueueBenchResult; label: string; higherIsBetter: boolean; unit: string };
const FIGURES: Figure[] = [
  { key: 'singleEnqueueRate', label: 'enqueue, single (jobs/s)', higherIsBetter: true, unit: '' },
  { key: 'bulkEnqueueRate', label: 'enqueue, bulk (jobs/s)', higherIsBetter: true, unit: '' },
  { key: 'throughput', label: 'throughput, handler window (jobs/s)', higherIsBetter: true, unit: '' },
  { key: 'throughputToComplete', label: 'throughput, until all complete (jobs/s)', higherIsBetter: true, unit: '' },
  { key: 'latencyP50', label: 'pickup latency p50 (ms)', higherIsBetter: false, unit: '' },
  { key: 'latencyP99', label: 'pickup latency p99 (ms)', higherIsBetter: false, unit: '' },
];

export function printResults(results: QueueBenchResult[], settings: BenchSettings): void {
  const systems = [...new Set(results.map((result) => result.system))];
  const best = (system: string, figure: Figure) => {
    const values = results.filter((r) => r.system === system).map((r) => r[figure.key] as number);
    return figure.higherIsBetter ? Math.max(...values) : Math.min(...values);
  };
  console.log('\nSettings per system:');
  for (const system of systems) console.log(`  ${system}: ${results.find((r) => r.system === system)!.describe}`);
  console.log(`\n${settings.jobs} no-op jobs, total concurrency ${settings.concurrency}, best of ${settings.rounds} round(s)\n`);
  const withQuiet = systems.includes(OURS_QUIET);
  const header = ['figure', ...systems, 'ours / best peer', ...(withQuiet ? ['notifications off / best peer'] : [])];
  const rows = FIGURES.map((figure) => {
    const values = systems.map((system) => best(system, figure));
    const peers = systems.filter((system) => PEERS.includes(system)).map((system) => best(system, figure));
    const bestPeer = figure.higherIsBetter ? Math.max(...peers) : Math.min(...peers);
    const ratio = (system: string) => {
      const ours = best(system, figure);
      const value = figure.higherIsBetter ? ours / bestPeer : bestPeer / ours;
      return `${value.toFixed(2)}×${figure.higherIsBetter ? '' : ' (faster)'}`;
    };
    return [figure.label, ...values.map(format), ratio(OURS), ...(withQuiet ? [ratio(OURS_QUIET)] : [])];
  });
  const widths = header.map((_, i) => Math.max(header[i]!.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const row of rows) console.log(line(row));
  const faults = results.filter((r) => r.duplicates > 0 || r.missing > 0);
  console.log(
    faults.length === 0
      ? '\nEvery system ran every job exactly once in every round.'
      : `\nWARNING: duplicates/missing: ${faults.map((r) => `${r.system} dup=${r.duplicates} missing=${r.missing}`).join('; ')}`,
  );
}

function format(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(2);
}

// `gauges`: the queue gauges the workers publish (worker/ops/queue-gauges.ts). `--once` publishes them to CloudWatch
// once and exits — the command of the scheduled task that keeps the gauges (and the alarms on them) alive while the
// service runs 0 tasks. Without it, it prints them and publishes nothing.
import type { Command } from 'commander';
import { ConfigError, loadConfig, requireDatabase } from '../../config.js';
import { defaultRegistry } from '../../handlers/registry.js';
import { createLogger } from '../../logger.js';
import { GaugeLeadership } from '../../ops/gauge-leadership.js';
import { createCloudWatchClient, MetricsPublisher } from '../../ops/metrics.js';
import { publishGaugesOnce, type GaugeRound } from '../../ops/queue-gauges.js';
import { readQueueGauges, totalGauges, type KindGauges } from '../../queue/gauges.js';
import { withDatabase } from '../context.js';
import { formatTable, printJson, printLine } from '../output.js';

/** sysexits EX_UNAVAILABLE: CloudWatch did not take the points (after the SDK's retries). */
const EXIT_NOT_PUBLISHED = 69;

export function registerGaugesCommand(program: Command): void {
  program
    .command('gauges')
    .description('the queue gauges; --once publishes them to CloudWatch (METRICS_NAMESPACE) once and exits')
    .option('--once', 'publish once and exit: 0 published (or left to the worker that publishes them), 69 CloudWatch refused')
    .option('--json', 'print JSON only')
    .action(async (options: { once?: boolean; json?: boolean }) => {
      if (!options.once) {
        const gauges = await withDatabase((pool) => readQueueGauges(pool, defaultRegistry().kinds()));
        if (options.json) return printJson({ gauges, total: totalGauges(gauges) });
        return printGaugeTable(gauges);
      }
      const round = await publishOnce();
      if (options.json) printJson(round);
      else printLine(summary(round.outcome, round.namespace, round.gauges));
      if (round.outcome === 'failed') process.exitCode = EXIT_NOT_PUBLISHED;
    });
}

async function publishOnce(): Promise<GaugeRound & { namespace: string }> {
  const config = loadConfig();
  const namespace = config.metrics.namespace;
  if (!namespace) throw new ConfigError('METRICS_NAMESPACE', 'METRICS_NAMESPACE is not set: gauges --once publishes to that CloudWatch namespace');
  // Log lines (a refused call, the leadership) go to stderr: stdout holds the summary alone.
  const log = createLogger({ level: config.logLevel, format: 'json', name: 'bulk-import-gauges', destination: process.stderr });
  const cloudWatch = createCloudWatchClient(config.metrics, config.awsRegion)!;
  try {
    const round = await publishGaugesOnce({
      leadership: new GaugeLeadership(requireDatabase(config), config.worker.workerId, log),
      publisher: new MetricsPublisher(cloudWatch, namespace, log),
      knownKinds: defaultRegistry().kinds(),
    });
    return { ...round, namespace };
  } finally {
    cloudWatch.destroy();
  }
}

function summary(outcome: GaugeRound['outcome'], namespace: string, gauges: KindGauges[]): string {
  if (outcome === 'skipped') return `gauges not published: a running worker publishes them to ${namespace}`;
  const total = totalGauges(gauges);
  const figures =
    `${gauges.length} kinds; queued ${total.queued} (oldest due ${total.oldestQueuedAgeSeconds} s), ` +
    `running ${total.running} (oldest ${total.oldestRunningAgeSeconds} s), dead ${total.dead}, ` +
    `most failures in a row ${total.maxConsecutiveFailures}`;
  return outcome === 'published'
    ? `gauges published to ${namespace}: ${figures}`
    : `gauges NOT published to ${namespace} (CloudWatch refused or unreachable): ${figures}`;
}

function printGaugeTable(gauges: KindGauges[]): void {
  const row = (kind: string, g: Omit<KindGauges, 'kind'>) => [
    kind, g.queued, g.oldestQueuedAgeSeconds, g.running, g.oldestRunningAgeSeconds, g.dead, g.maxConsecutiveFailures,
  ];
  printLine(
    formatTable(
      ['kind', 'queued', 'oldest due s', 'running', 'oldest running s', 'dead', 'failures in a row'],
      [...gauges.map((g) => row(g.kind, g)), row('total', totalGauges(gauges))],
    ),
  );
}

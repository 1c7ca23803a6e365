// The comparison table of the mass-import benchmark.

export interface ToolResult {
  tool: string;
  ours: boolean;
  round: number;
  /** Until the data is there, start-up included: aws, spawn → exit; ours, spawn → the run recorded finished. */
  wallMs: number;
  /** Ours only: spawn → exit of the worker process (adds the idle poll of --exit-when-idle). */
  processMs?: number;
  /** Ours only: the job's own time, claim to completion (started_at → finished_at). */
  jobMs?: number;
  peakRssBytes: number | null;
  objects: number;
  bytes: number;
  documents?: number;
}

export interface MassImportReport {
  files: number;
  bytes: number;
  largest: number;
  results: ToolResult[];
  bigFile: ToolResult | undefined;
  awsAvailable: boolean;
}

const MiB = 1024 * 1024;
const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const rss = (bytes: number | null) => (bytes === null ? '-' : `${(bytes / MiB).toFixed(0)} MiB`);

function row(cells: string[], widths: number[]): string {
  return cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[index]!) : cell.padStart(widths[index]!))).join('  ');
}

/** Best (fastest) run of a tool over the rounds. */
function best(results: ToolResult[], ours: boolean): ToolResult | undefined {
  return results.filter((result) => result.ours === ours).sort((a, b) => a.wallMs - b.wallMs)[0];
}

export function printMassImportResults(report: MassImportReport): void {
  const out: string[] = [];
  out.push('');
  out.push(
    `Mass import benchmark: ${report.files.toLocaleString('en-US')} files, ${(report.bytes / MiB).toFixed(1)} MiB ` +
      `(largest ${(report.largest / MiB).toFixed(1)} MiB), into one local S3 server (s3rver) on loopback; ` +
      `${report.results.length} run(s), best of rounds shown.`,
  );
  out.push('Ours runs as a separate process from compiled JavaScript, as in the production image; both read the tree from the page cache.');
  out.push('Defaults on both sides: aws CLI 10 concurrent requests, multipart from 8 MB in 8 MB parts; ours 8 files at once, multipart from 8 MiB in 8 MiB parts, 2 parts in flight per file.');
  out.push('');
  const header = ['tool', 'seconds', 'MB/s', 'files/s', 'peak RSS', 'objects', 'rows'];
  const widths = [44, 8, 8, 8, 9, 8, 6];
  out.push(row(header, widths));
  out.push(widths.map((width) => '-'.repeat(width)).join('  '));
  const lines: ToolResult[] = [];
  const aws = best(report.results, false);
  const ours = best(report.results, true);
  if (aws) lines.push(aws);
  if (ours) lines.push(ours);
  for (const result of lines) {
    const seconds = result.wallMs / 1000;
    out.push(
      row(
        [
          result.tool,
          seconds.toFixed(2),
          mb(report.bytes / seconds),
          (report.files / seconds).toFixed(0),
          rss(result.peakRssBytes),
          String(result.objects),
          result.documents === undefined ? '-' : String(result.documents),
        ],
        widths,
      ),
    );
  }
  if (ours?.jobMs !== undefined) {
    const seconds = ours.jobMs / 1000;
    out.push(row([' └ ours, job only (claim → completion)', seconds.toFixed(2), mb(report.bytes / seconds), (report.files / seconds).toFixed(0), '', '', ''], widths));
  }
  if (ours?.processMs !== undefined) {
    const seconds = ours.processMs / 1000;
    out.push(row([' └ ours, until the process exited', seconds.toFixed(2), mb(report.bytes / seconds), (report.files / seconds).toFixed(0), '', '', ''], widths));
  }
  out.push('');
  if (aws && ours) {
    const ratio = aws.wallMs / ours.wallMs;
    out.push(
      `Ratio (ours / aws CLI, MB/s until the data is there, process start-up included): ${ratio.toFixed(2)}×  — goal ≥ 1.00×: ${ratio >= 1 ? 'met' : 'NOT met'}`,
    );
    if (ours.processMs !== undefined) out.push(`Ratio counting until our process exited: ${(aws.wallMs / ours.processMs).toFixed(2)}×`);
    if (ours.jobMs !== undefined) out.push(`Ratio on the job's own time (without the worker's start-up): ${(aws.wallMs / ours.jobMs).toFixed(2)}×`);
    const complete = aws.objects === report.files && ours.objects === report.files && ours.documents === report.files;
    out.push(`Completeness: aws ${aws.objects}/${report.files} objects; ours ${ours.objects}/${report.files} objects and ${ours.documents}/${report.files} rows ${complete ? '(all there)' : '(MISSING SOME)'}`);
  } else if (!report.awsAvailable) {
    out.push('The aws CLI column was skipped (awscli not installed): no ratio.');
  }
  if (report.bigFile) {
    out.push(
      `Memory flat in file size: peak RSS ${rss(report.bigFile.peakRssBytes)} importing one ${(report.bigFile.bytes / MiB).toFixed(0)} MiB file ` +
        `(${mb(report.bigFile.bytes / (report.bigFile.wallMs / 1000))} MB/s) vs ${rss(ours?.peakRssBytes ?? null)} for the whole tree.`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

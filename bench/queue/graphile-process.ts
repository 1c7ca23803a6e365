// graphile-worker 0.18 as its own process for the black-box queue bench (bench/queue/black-box.ts): the runner with
// its batching on (local queue, batched completion), a no-op task, its log lines at info appended to a file. Run with
// Node's own type stripping (`node bench/queue/graphile-process.ts`), so no TypeScript loader costs it anything.
//
//   DATABASE_URL=… CONCURRENCY=16 LOG_FILE=… WINDOW_FILE=… node bench/queue/graphile-process.ts
//
// WINDOW_FILE gets, at stop, the processing window as JSON (epoch ms): the first job taken (`job:start`, emitted when
// get_job returns it) and the last job's outcome written back (`job:complete`), as our jobs table's first started_at
// and last finished_at.
import { createWriteStream, writeFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { Logger, run, type WorkerEvents } from 'graphile-worker';

const log = createWriteStream(process.env.LOG_FILE ?? '/dev/null', { flags: 'a' });
// Like our worker at info: one line per event graphile logs at info or above, as JSON.
const logger = new Logger(() => (level, message, meta) => {
  if (level === 'debug') return;
  log.write(`${JSON.stringify({ level, time: Date.now(), msg: message, ...meta })}\n`);
});

// Given to run() so that no job starts before the listeners are on.
const events: WorkerEvents = new EventEmitter();
let firstStart: number | undefined;
let lastFinish: number | undefined;
events.on('job:start', () => (firstStart ??= Date.now()));
events.on('job:complete', () => (lastFinish = Date.now()));

const runner = await run({
  events,
  connectionString: process.env.DATABASE_URL!,
  concurrency: Number(process.env.CONCURRENCY ?? 16),
  pollInterval: 1_000,
  noHandleSignals: true,
  logger,
  preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  taskList: { noop: async () => {} },
});

process.once('SIGTERM', () => {
  if (process.env.WINDOW_FILE) writeFileSync(process.env.WINDOW_FILE, JSON.stringify({ firstStart, lastFinish }));
  void runner.stop().then(() => log.end(() => process.exit(0)));
});

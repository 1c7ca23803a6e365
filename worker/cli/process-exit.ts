// Ending the process when a command returns, for the commands that ask for it. The worker does: a handler still
// running after the shutdown grace (its lease released, its writes fenced), an S3 retry's timer or a keep-alive socket
// would otherwise keep a stopped worker alive until ECS kills it. Other commands end when nothing is left to do.
let before: Array<() => Promise<void>> | undefined;

/** Asks for the process to exit once the command returns, after `flush` (the command's logs) has resolved. */
export function exitWhenDone(flush: () => Promise<void>): void {
  (before ??= []).push(flush);
}

/**
 * Exits if a command asked to, once its logs and what it wrote to stdout and stderr are out: into a pipe those
 * writes are asynchronous, and an exit would drop what the pipe had not taken yet.
 */
export async function exitIfAsked(): Promise<void> {
  if (!before) return;
  await Promise.all(before.map((flush) => flush()));
  await Promise.all([process.stdout, process.stderr].map((stream) => new Promise<void>((resolve) => stream.write('', () => resolve()))));
  process.exit();
}

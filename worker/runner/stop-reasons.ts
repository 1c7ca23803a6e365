// Why a job's AbortSignal fired. Handlers just stop; the runner reads `signal.reason` to record the right outcome.
export { LeaseLostError } from '../queue/lease.js';

export class CancelRequestedError extends Error {
  readonly code = 'CANCELED';
  constructor(readonly jobId: number) {
    super(`job ${jobId} was canceled by an operator`);
    this.name = 'CancelRequestedError';
  }
}

export class ShutdownError extends Error {
  readonly code = 'SHUTDOWN';
  constructor() {
    super('worker is shutting down; the job goes back to the queue and resumes on another worker');
    this.name = 'ShutdownError';
  }
}

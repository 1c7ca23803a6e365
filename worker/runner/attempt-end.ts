// How an attempt left the worker's hands, as the runner's jobFinished event, the `job finished` log line, the run
// span and the JobsFinished metric's Outcome report it.
import type { JobState } from '../queue/types.js';

export type AttemptEnd =
  /** The state the attempt left the run in: terminal, `review_ready`, or `queued` (a retry). */
  | JobState
  /** The run waits for S3 or the database (queue/outage.ts): `queued` again, the attempt not counted. Not a failure
   *  of the run: an outage pages through its own alarms, not through the runs that wait for it. */
  | 'waiting'
  /** The lease was gone (expired, or the job was rescued and claimed again): the handler was stopped and its
   *  outcome discarded; whoever holds the run now decides it. */
  | 'lost'
  /** The handler failed and the failure could not be stored (the database did not answer): the lease expires and
   *  the rescuer requeues the run. */
  | 'unrecorded'
  /** Given back to the queue at shutdown, not counted as an attempt. */
  | 'released';

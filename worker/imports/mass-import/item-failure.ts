// A failure of one item (one file) of an import, as opposed to a failure of the whole run: the item is recorded as
// failed with this code and message, and the run goes on (ending `partial`).
import type { ErrorClass } from '../../queue/types.js';

export class ItemFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** transient: worth trying again in a later attempt of the run (S3 unavailable); permanent: not by itself. */
    readonly errorClass: ErrorClass = 'permanent',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ItemFailure';
  }
}

// Every kind this build runs. Each kind lives in its own module and is listed here once.
import { auditHandler } from './audit.js';
import { backfillHandler } from './backfill.js';
import { csvFinalizeHandler } from './csv-finalize.js';
import { csvValidateHandler } from './csv-validate.js';
import { massImportHandler } from './mass-import.js';
import { HandlerRegistry } from './handler-registry.js';
import { noopHandler } from './noop.js';

export { HandlerRegistry };

/** Every kind this build of the worker can run. */
export function defaultRegistry(): HandlerRegistry {
  return new HandlerRegistry([noopHandler, massImportHandler, backfillHandler, csvValidateHandler, csvFinalizeHandler, auditHandler]);
}

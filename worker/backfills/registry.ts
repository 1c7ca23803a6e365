// Which backfills this build knows. Each lives in its own module and is listed here once; adding one is a
// definition file plus one line below.
import { PermanentJobError } from '../queue/errors.js';
import { compileBackfill, type CompiledBackfill } from './compile.js';
import { documentsFileExtension } from './documents-file-extension.js';
import type { BackfillDefinition } from './types.js';

export class BackfillRegistry {
  private readonly backfills = new Map<string, CompiledBackfill>();

  constructor(definitions: BackfillDefinition[] = []) {
    for (const definition of definitions) this.register(definition);
  }

  /** Checks the definition (names, types) and adds it; a bad definition fails here, at start-up. */
  register(definition: BackfillDefinition): this {
    if (this.backfills.has(definition.name)) throw new Error(`backfill ${definition.name} is registered twice`);
    this.backfills.set(definition.name, compileBackfill(definition));
    return this;
  }

  get(name: string): CompiledBackfill | undefined {
    return this.backfills.get(name);
  }

  /** The backfill, or a PermanentJobError that lists the known names. */
  require(name: string): CompiledBackfill {
    const backfill = this.backfills.get(name);
    if (!backfill) {
      throw new PermanentJobError(
        `unknown backfill "${name}"; known backfills: ${this.names().join(', ') || '(none)'}`,
        'UNKNOWN_BACKFILL',
        { backfill: name },
      );
    }
    return backfill;
  }

  names(): string[] {
    return [...this.backfills.keys()].sort();
  }

  list(): CompiledBackfill[] {
    return this.names().map((name) => this.backfills.get(name)!);
  }
}

/** Every backfill this build of the worker can run. */
export function defaultBackfills(): BackfillRegistry {
  return new BackfillRegistry([documentsFileExtension]);
}

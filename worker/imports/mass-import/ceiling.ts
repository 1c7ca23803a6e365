// OQ-IMP-002: the ceiling of one mass import. Defaults come from configuration; a payload may lower them, or raise
// them up to the hard caps; raising past a hard cap needs a configuration change (an operator decision, reviewed
// like any deploy). The plan measures the tree first and refuses it before anything is written; files are checked
// again as they are opened for upload (UploadCeiling), since a file may grow after the plan measured it.
import type { MassImportConfig } from '../../config.js';
import { PermanentJobError } from '../../queue/errors.js';
import { CAMPAIGN_RUNBOOK } from './campaign-mount.js';
import { ItemFailure } from './item-failure.js';

export interface ImportLimits {
  maxFiles: number;
  maxTotalBytes: number;
  maxFileBytes: number;
}

export type LimitName = keyof ImportLimits;

interface LimitDescription {
  what: string;
  defaultVariable: string;
  hardCapVariable: string;
  hardCap: (config: MassImportConfig) => number;
  format: (value: number) => string;
}

const count = (value: number) => value.toLocaleString('en-US');
export const formatByteCount = (value: number): string => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${scaled.toFixed(scaled >= 100 ? 0 : 1)} ${units[unit]} (${count(value)} bytes)`;
};

const LIMITS: Record<LimitName, LimitDescription> = {
  maxFiles: {
    what: 'files',
    defaultVariable: 'MASS_IMPORT_MAX_FILES',
    hardCapVariable: 'MASS_IMPORT_HARD_CAP_FILES',
    hardCap: (config) => config.hardCapFiles,
    format: count,
  },
  maxTotalBytes: {
    what: 'total size',
    defaultVariable: 'MASS_IMPORT_MAX_TOTAL_BYTES',
    hardCapVariable: 'MASS_IMPORT_HARD_CAP_TOTAL_BYTES',
    hardCap: (config) => config.hardCapTotalBytes,
    format: formatByteCount,
  },
  maxFileBytes: {
    what: 'largest file',
    defaultVariable: 'MASS_IMPORT_MAX_FILE_BYTES',
    hardCapVariable: 'MASS_IMPORT_HARD_CAP_FILE_BYTES',
    hardCap: (config) => config.hardCapFileBytes,
    format: formatByteCount,
  },
};

export const LIMIT_NAMES = Object.keys(LIMITS) as LimitName[];

/** The hard cap of a limit, for payload validation. */
export function hardCapOf(config: MassImportConfig, name: LimitName): { value: number; variable: string } {
  return { value: LIMITS[name].hardCap(config), variable: LIMITS[name].hardCapVariable };
}

/** The limits of one run: the payload's where given (validated against the hard caps at enqueue), else the defaults. */
export function resolveLimits(config: MassImportConfig, requested: Partial<ImportLimits>): ImportLimits {
  return {
    maxFiles: requested.maxFiles ?? config.maxFiles,
    maxTotalBytes: requested.maxTotalBytes ?? config.maxTotalBytes,
    maxFileBytes: requested.maxFileBytes ?? config.maxFileBytes,
  };
}

/** What the plan measured of the tree. */
export interface TreeMeasure {
  files: number;
  totalBytes: number;
  largestFile: { path: string; size: number } | null;
  /**
   * The walk stopped before the end of the tree, the tree being over `limit` (import-plan.ts): the figures above are
   * what it saw, lower bounds. Absent when the tree was walked to its end.
   */
  stopped?: {
    limit: 'maxFiles' | 'maxTotalBytes';
    /** The value the tree is known to be over: the walk stopped as soon as it passed it. */
    above: number;
    /**
     * A directory whose files passed the files left to the limit (refused before it was read to its end): `alone`, its
     * own files did; otherwise they did with the files listed in the directories above it and not yet reported.
     */
    directory?: { path: string; alone: boolean } | undefined;
  };
}

export interface CeilingViolation {
  limit: LimitName;
  allowed: number;
  /** The measured value; with `lowerBound`, what the walk saw before it stopped (the tree holds more). */
  measured: number;
  lowerBound?: true;
  /** Human sentence: the limit, the measured value, and how to raise it. */
  message: string;
}

/** How to let a run hold `needed` under a limit: the payload field up to the hard cap, past it the hard cap first. */
function howToAllow(config: MassImportConfig, name: LimitName, needed: number): string {
  const limit = LIMITS[name];
  const hardCap = limit.hardCap(config);
  return needed <= hardCap
    ? `enqueue again with "${name}": ${needed} (or more, up to the hard cap ${limit.format(hardCap)}) in the payload, or raise the default ${limit.defaultVariable}`
    : `raise ${limit.hardCapVariable} (now ${limit.format(hardCap)}) in the worker's configuration — a reviewed change — then enqueue with "${name}": ${needed}`;
}

export function checkCeiling(config: MassImportConfig, limits: ImportLimits, measure: TreeMeasure): CeilingViolation[] {
  const measured: Record<LimitName, number> = {
    maxFiles: measure.files,
    maxTotalBytes: measure.totalBytes,
    maxFileBytes: measure.largestFile?.size ?? 0,
  };
  const stopped = measure.stopped;
  const violations: CeilingViolation[] = [];
  for (const name of LIMIT_NAMES) {
    const limit = LIMITS[name];
    const hardCap = limit.hardCap(config);
    if (stopped?.limit === name) {
      // The walk stopped as soon as the tree passed `above` (the run's limit, or for a dry run the hard cap): the
      // verdict is certain, the true value is not known.
      const where = stopped.directory
        ? stopped.directory.alone
          ? `; directory "${stopped.directory.path}" alone lists more files than were left`
          : `; directory "${stopped.directory.path}" lists more files than were left, with those still to count in the directories above it`
        : '';
      const howToRaise =
        stopped.above >= hardCap
          ? `raise ${limit.hardCapVariable} (now ${limit.format(hardCap)}) in the worker's configuration — a reviewed change — then enqueue with a larger "${name}"`
          : `enqueue again with a larger "${name}" (up to the hard cap ${limit.format(hardCap)}) in the payload — a dry run with it measures the tree first — or raise the default ${limit.defaultVariable}`;
      violations.push({
        limit: name,
        allowed: limits[name],
        measured: Math.max(measured[name], stopped.above + 1),
        lowerBound: true,
        message: `${limit.what}: more than ${limit.format(stopped.above)} (the plan stopped walking there${where}) > ${name} = ${limit.format(limits[name])}; to raise it, ${howToRaise}`,
      });
      continue;
    }
    if (measured[name] <= limits[name]) continue;
    const seen = stopped ? ' seen' : '';
    const subject = name === 'maxFileBytes' && measure.largestFile ? `${seen} (${measure.largestFile.path})` : seen;
    const howToRaise = howToAllow(config, name, measured[name]);
    violations.push({
      limit: name,
      allowed: limits[name],
      measured: measured[name],
      ...(stopped ? { lowerBound: true as const } : {}),
      message: `${limit.what}${subject}: ${stopped ? 'at least ' : ''}${limit.format(measured[name])} > ${name} = ${limit.format(limits[name])}; to raise it, ${howToRaise}`,
    });
  }
  return violations;
}

export class CeilingExceededError extends PermanentJobError {
  constructor(
    source: string,
    readonly violations: CeilingViolation[],
  ) {
    super(
      `mass import of ${source} is over its ceiling, nothing was written: ${violations.map((v) => v.message).join('; ')}. ` +
        `Policy: ${CAMPAIGN_RUNBOOK}.`,
      'CEILING_EXCEEDED',
      { source, violations: violations.map(({ limit, allowed, measured, lowerBound }) => ({ limit, allowed, measured, ...(lowerBound ? { lowerBound } : {}) })) },
    );
    this.name = 'CeilingExceededError';
  }
}

export const MAX_FILE_BYTES_EXCEEDED_CODE = 'MAX_FILE_BYTES_EXCEEDED';
export const MAX_TOTAL_BYTES_EXCEEDED_CODE = 'MAX_TOTAL_BYTES_EXCEEDED';

/**
 * The run's ceiling applied to each file as it is opened for upload. The plan's check holds for the sizes it measured;
 * a file written to since (1 KB then, 50 MB now) would be uploaded whole. So a file over `maxFileBytes` when opened,
 * or whose growth since the plan would take the run past `maxTotalBytes`, fails (permanent, nothing of it read) while
 * the files that fit are still imported: the run never uploads more than its limits allow. The run's bytes are those
 * of its items not failed, at their latest known size (the plan's, or the size an earlier read recorded), plus the
 * growth of the files admitted since, less the files that failed in this attempt (release); a file that shrank gives
 * nothing back (a later attempt counts it as recorded).
 */
export class UploadCeiling {
  /** The size each grown file was admitted at (it may be opened again: a re-read after a change, a retry). */
  private readonly admitted = new Map<number, number>();

  constructor(
    private readonly config: MassImportConfig,
    private readonly limits: ImportLimits,
    private runBytes: number,
  ) {}

  /** Admits the item at `size` bytes (its size when opened), or throws the ItemFailure that says which limit it passes. */
  admit(item: { itemNo: number; relativePath: string; size: number }, size: number): void {
    const { maxFileBytes, maxTotalBytes } = this.limits;
    const planned = `the plan measured ${formatByteCount(item.size)}`;
    if (size > maxFileBytes) {
      throw new ItemFailure(
        MAX_FILE_BYTES_EXCEEDED_CODE,
        `${item.relativePath} is ${formatByteCount(size)} now (${planned}), over the run's maxFileBytes = ${formatByteCount(maxFileBytes)}: ` +
          `not read, not uploaded. To import it once it no longer grows, ${howToAllow(this.config, 'maxFileBytes', size)}`,
      );
    }
    const known = this.admitted.get(item.itemNo) ?? item.size;
    if (size <= known) return;
    const total = this.runBytes + size - known;
    if (total > maxTotalBytes) {
      throw new ItemFailure(
        MAX_TOTAL_BYTES_EXCEEDED_CODE,
        `${item.relativePath} is ${formatByteCount(size)} now (${planned}): with it the run would hold ${formatByteCount(total)}, over its ` +
          `maxTotalBytes = ${formatByteCount(maxTotalBytes)}; not read, not uploaded (the files that fit are imported). To import it, ` +
          howToAllow(this.config, 'maxTotalBytes', total),
      );
    }
    this.runBytes = total;
    this.admitted.set(item.itemNo, size);
  }

  /** The item failed in this attempt: its bytes (as planned, or as admitted) are no longer the run's. */
  release(item: { itemNo: number; size: number }): void {
    this.runBytes -= this.admitted.get(item.itemNo) ?? item.size;
    this.admitted.delete(item.itemNo);
  }
}

// Argument parsers shared by the commands; they throw commander's InvalidArgumentError so the message names the flag.
import { InvalidArgumentError } from 'commander';

export function parsePositiveInt(value: string): number {
  const parsed = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(parsed) || parsed < 1) {
    throw new InvalidArgumentError(`expected a whole number of at least 1, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

export function parseNonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`expected a whole number of at least 0, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/**
 * A parser of whole numbers from `min` to `max`: every numeric option has a range, checked here before any SQL (or
 * timer) sees the value, so `--priority 99999999999` names the flag and the range instead of failing in Postgres.
 */
export function integerIn(min: number, max: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!/^[+-]?\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(
        `expected a whole number from ${min.toLocaleString('en-US')} to ${max.toLocaleString('en-US')}, got ${JSON.stringify(value.slice(0, 40))}`,
      );
    }
    return parsed;
  };
}

/** The most rows a listing (`jobs`, `dead list`, `items`, `errors`, `audit`, `show --errors`) prints at once. */
export const MAX_LIST_LIMIT = 10_000;
/** `--limit` of a listing: 1 to MAX_LIST_LIMIT (page on with `--offset` where the command has it). */
export const parseLimit = integerIn(1, MAX_LIST_LIMIT);

export function parseInteger(value: string): number {
  const parsed = Number(value);
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(parsed)) {
    throw new InvalidArgumentError(`expected a whole number, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

export function parseJobId(value: string): number {
  const parsed = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(parsed) || parsed < 1) {
    throw new InvalidArgumentError(`expected a job id (a positive whole number), got ${JSON.stringify(value)}`);
  }
  return parsed;
}

export function parseJsonObject(value: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw new InvalidArgumentError(`not valid JSON: ${(error as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new InvalidArgumentError('expected a JSON object such as {"sleepMs": 100}');
  }
  return parsed as Record<string, unknown>;
}

export function parseList(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** The longest duration an option takes: 100 years (`--since`, `--older-than`, `--window`, `--min-age`). */
export const MAX_DURATION_MS = 36_500 * 86_400_000;

/** Durations such as 30s, 15m, 12h, 7d (a bare number is seconds), up to MAX_DURATION_MS. */
export function parseDurationMs(value: string): number {
  const match = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError(`expected a duration such as 30s, 15m, 12h or 7d, got ${JSON.stringify(value.slice(0, 40))}`);
  const unit = match[2] ?? 's';
  const factor = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  const ms = Number(match[1]) * factor;
  if (!(ms <= MAX_DURATION_MS)) throw new InvalidArgumentError(`expected a duration of at most 36500d (100 years), got ${JSON.stringify(value.slice(0, 40))}`);
  return ms;
}

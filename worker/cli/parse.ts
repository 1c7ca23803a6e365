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

/** Durations such as 30s, 15m, 12h, 7d (a bare number is seconds). */
export function parseDurationMs(value: string): number {
  const match = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError(`expected a duration such as 30s, 15m, 12h or 7d, got ${JSON.stringify(value)}`);
  const unit = match[2] ?? 's';
  const factor = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit]!;
  return Number(match[1]) * factor;
}

// Small payload readers for handlers: each refusal is a PermanentJobError that names the field and the expected form.
import { truncateText } from '../bounds.js';
import { PermanentJobError } from '../queue/errors.js';

export class PayloadReader {
  constructor(
    private readonly kind: string,
    private readonly raw: Record<string, unknown>,
  ) {}

  private fail(field: string, expected: string): never {
    throw new PermanentJobError(
      `invalid ${this.kind} payload: "${field}" must be ${expected}, got ${truncateText(JSON.stringify(this.raw[field]) ?? 'nothing', 200)}`,
      'INVALID_PAYLOAD',
      { field },
    );
  }

  /** Refuses fields the kind does not know, so a typo does not silently fall back to a default. */
  onlyKnown(fields: string[]): void {
    const unknown = Object.keys(this.raw).filter((key) => !fields.includes(key));
    if (unknown.length > 0) {
      throw new PermanentJobError(
        `invalid ${this.kind} payload: unknown field(s) ${truncateText(unknown.join(', '), 500)}; known: ${fields.join(', ')}`,
        'INVALID_PAYLOAD',
        { fields: unknown, field: truncateText(unknown[0]!, 100) },
      );
    }
  }

  optionalString(field: string, pattern?: RegExp, expected = 'a string', maxBytes?: number): string | undefined {
    const value = this.raw[field];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string' || (pattern && !pattern.test(value))) this.fail(field, expected);
    if (maxBytes !== undefined && Buffer.byteLength(value, 'utf8') > maxBytes) {
      this.fail(field, `${expected} of at most ${maxBytes} bytes (UTF-8), not ${Buffer.byteLength(value, 'utf8')}`);
    }
    return value;
  }

  string(field: string, pattern?: RegExp, expected = 'a non-empty string', maxBytes?: number): string {
    const value = this.optionalString(field, pattern, expected, maxBytes);
    if (value === undefined || value === '') this.fail(field, expected);
    return value;
  }

  optionalInteger(field: string, min: number, max: number): number | undefined {
    const value = this.raw[field];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      this.fail(field, `a whole number from ${min} to ${max}`);
    }
    return value;
  }

  boolean(field: string, fallback: boolean): boolean {
    const value = this.raw[field];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') this.fail(field, 'true or false');
    return value;
  }
}

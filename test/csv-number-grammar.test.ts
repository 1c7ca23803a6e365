// The number grammar of the CSV profiles, as docs/RUNBOOK.md ("Numbers in CSV files") writes it down: every accepted
// form with the text that is written, every refused form with its rule and hint — through the real validator, with
// the products profile's header layout (price: decimal, scale 2, 0 to 9,999,999,999.99; quantity: integer, 0 to
// 2,147,483,647).
import { describe, expect, it } from 'vitest';
import { readHeader } from '../worker/imports/csv/header.js';
import { productsProfile } from '../worker/imports/csv/profiles/products.js';
import { RowValidator } from '../worker/imports/csv/row-validator.js';

const HEADER = ['sku', 'name', 'price', 'quantity', 'status'];
const validator = new RowValidator(
  readHeader(productsProfile, { line: 1, fields: HEADER }, { bucket: 'b', key: 'imports/t/f.csv', encoding: 'utf-8' }),
);

function check(column: 'price' | 'quantity', value: string) {
  const fields = ['SKU-1', 'Name', column === 'price' ? value : '1.00', column === 'quantity' ? value : '1', 'active'];
  const result = validator.check(fields);
  const at = HEADER.indexOf(column);
  if (result.ok) return { ok: true as const, written: result.values[at] };
  const issue = result.issues.find((candidate) => candidate.column === column)!;
  return { ok: false as const, rule: issue.rule, message: issue.message };
}

const DIGITS_HINT = '(write the digits 0-9: digits of other scripts and full-width digits are not read)';
const SIGN_HINT = '(write the sign as "-" or "+")';
const POINT_HINT = '(use "." as the decimal point)';
const THOUSANDS_HINT = '(no thousands separators; "." is the decimal point)';
const EXPONENT_HINT = '(write the number out: no exponent)';
const FINITE_HINT = '(only finite numbers)';

describe('decimal (price)', () => {
  it.each([
    ['12.50', '12.50'],
    ['1.5', '1.5'],
    [' 1.5 ', '1.5'],
    ['\u00a01.5\u2007', '1.5'], // no-break space, figure space
    ['\ufeff1.5', '1.5'],
    ['+1.5', '1.5'],
    ['-0', '0'],
    ['-0.00', '0.00'],
    ['+0', '0'],
    ['0', '0'],
    ['5.', '5'],
    ['.5', '.5'],
    ['+.5', '.5'],
    ['00012.50', '00012.50'],
    ['1.50', '1.50'],
    ['9999999999.99', '9999999999.99'],
    ['00000000000000000001.25', '00000000000000000001.25'],
  ])('accepts %j, written as %j', (value, written) => {
    expect(check('price', value)).toEqual({ ok: true, written });
  });

  it.each([
    // Digits of other scripts, full-width digits, other signs.
    ['١٢', 'type', DIGITS_HINT],
    ['\u0661.\u0665', 'type', DIGITS_HINT],
    ['१२', 'type', DIGITS_HINT],
    ['１２', 'type', DIGITS_HINT],
    ['１.５', 'type', DIGITS_HINT],
    ['1.2٣', 'type', DIGITS_HINT],
    ['\u22121', 'type', SIGN_HINT],
    ['\uff0d1', 'type', SIGN_HINT],
    ['\u20131', 'type', SIGN_HINT],
    // Decimal comma, thousands separators, exponents, non-finite numbers.
    ['1,5', 'type', POINT_HINT],
    [',5', 'type', POINT_HINT],
    ['1,000', 'type', THOUSANDS_HINT],
    ['1 000', 'type', THOUSANDS_HINT],
    ["1'000", 'type', THOUSANDS_HINT],
    ['1_000', 'type', THOUSANDS_HINT],
    ['1,000.50', 'type', THOUSANDS_HINT],
    ['1e3', 'type', EXPONENT_HINT],
    ['1E-2', 'type', EXPONENT_HINT],
    ['0.1e1', 'type', EXPONENT_HINT],
    ['NaN', 'type', FINITE_HINT],
    ['Infinity', 'type', FINITE_HINT],
    ['-inf', 'type', FINITE_HINT],
    ['∞', 'type', FINITE_HINT],
    // Not the grammar at all.
    ['0x10', 'type', ''],
    ['0b1', 'type', ''],
    ['1.5.5', 'type', ''],
    ['++1', 'type', ''],
    ['+-1', 'type', ''],
    ['.', 'type', ''],
    ['-', 'type', ''],
    ['twelve', 'type', ''],
    // The grammar, then the column's rules: scale counts trailing zeros, a '-' is read (so a range error).
    ['1.234', 'scale', ''],
    ['1.500', 'scale', ''],
    ['-1', 'range', ''],
    ['-.5', 'range', ''],
    ['-0.01', 'range', ''],
    ['10000000000', 'range', ''],
    ['12345678901234567', 'range', ''],
  ])('refuses %j: %s', (value, rule, hint) => {
    const result = check('price', value);
    expect(result).toMatchObject({ ok: false, rule });
    if (rule === 'type') {
      const message = `price must be a number such as 12.50, got ${JSON.stringify(value.trim())}`;
      expect(result).toMatchObject({ message: hint ? `${message} ${hint}` : message });
    }
  });
});

describe('integer (quantity)', () => {
  it.each([
    ['7', '7'],
    [' 7 ', '7'],
    ['+7', '7'],
    ['007', '7'],
    ['-0', '0'],
    ['0', '0'],
    ['2147483647', '2147483647'],
  ])('accepts %j, written as %j', (value, written) => {
    expect(check('quantity', value)).toEqual({ ok: true, written });
  });

  it.each([
    ['٧', 'type', DIGITS_HINT],
    ['７', 'type', DIGITS_HINT],
    ['\u22127', 'type', SIGN_HINT],
    ['1,000', 'type', THOUSANDS_HINT],
    ['1e2', 'type', EXPONENT_HINT],
    ['NaN', 'type', FINITE_HINT],
    ['1.0', 'type', ''],
    ['1.5', 'type', ''],
    ['.5', 'type', ''],
    ['0x10', 'type', ''],
    ['-1', 'range', ''],
    ['2147483648', 'range', ''],
    ['99999999999999999999', 'range', ''],
  ])('refuses %j: %s', (value, rule, hint) => {
    const result = check('quantity', value);
    expect(result).toMatchObject({ ok: false, rule });
    if (rule === 'type') {
      const message = `quantity must be a whole number, got ${JSON.stringify(value)}`;
      expect(result).toMatchObject({ message: hint ? `${message} ${hint}` : message });
    }
  });
});

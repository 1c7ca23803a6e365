// The pure parts of CSV imports, without servers: the record parser (whatever the piece boundaries of the stream), the
// header check, the row validator with every column type and rule, and the profile definition check.
import { describe, expect, it } from 'vitest';
import { PermanentJobError } from '../worker/queue/errors.js';
import { escapeFormula, unescapeFormula } from '../worker/imports/csv/formula-escape.js';
import { HEADER_EXTRA_FIELDS, readHeader } from '../worker/imports/csv/header.js';
import { defineProfile, ProfileDefinitionError, type ImportProfile } from '../worker/imports/csv/profile.js';
import { productsProfile } from '../worker/imports/csv/profiles/products.js';
import { CsvRecordParser, type CsvRecord } from '../worker/imports/csv/record-parser.js';
import { csvFieldFor } from '../worker/imports/csv/row-errors.js';
import { RowValidator } from '../worker/imports/csv/row-validator.js';
import { buildTargetStatements, referenceColumns } from '../worker/imports/csv/target-sql.js';

/** Parses `text` fed in pieces of every given size; all splits must give the same records. */
function parseAll(text: string, options: { delimiter?: string; maxRecordChars?: number } = {}): CsvRecord[] {
  const results = [1, 2, 7, 64, text.length + 1].map((size) => {
    const parser = new CsvRecordParser({ maxRecordChars: options.maxRecordChars ?? 1000, delimiter: options.delimiter });
    const out: CsvRecord[] = [];
    for (let offset = 0; offset < text.length; offset += size) parser.push(text.slice(offset, offset + size), out);
    parser.end(out);
    return out;
  });
  for (const result of results.slice(1)) expect(result).toEqual(results[0]);
  return results[0]!;
}

const fieldsOf = (records: CsvRecord[]) => records.map((record) => [record.line, record.fields]);

describe('CsvRecordParser', () => {
  it('reads quoted fields, escaped quotes, delimiters and line breaks inside quotes, and every line ending', () => {
    const records = parseAll('a,b,c\r\n1,"x, y","say ""hi"""\n"multi\r\nline",2,3\r"cr",4,5\n6,7,');
    expect(fieldsOf(records)).toEqual([
      [1, ['a', 'b', 'c']],
      [2, ['1', 'x, y', 'say "hi"']],
      [3, ['multi\r\nline', '2', '3']],
      [5, ['cr', '4', '5']],
      [6, ['6', '7', '']],
    ]);
  });

  it('skips empty and blank lines but counts them', () => {
    expect(fieldsOf(parseAll('a,b\n\n  \r\n1,2\n\n'))).toEqual([[1, ['a', 'b']], [4, ['1', '2']]]);
  });

  it('keeps a quote inside an unquoted field, as spreadsheets write inches', () => {
    expect(fieldsOf(parseAll('a,b\n27" screen,2\n'))).toEqual([[1, ['a', 'b']], [2, ['27" screen', '2']]]);
  });

  it('flags text after a closing quote, keeping what it read', () => {
    expect(parseAll('a,b\n"x"y,2\n3,4\n').slice(1)).toEqual([
      { line: 2, fields: ['xy', '2'], problem: 'unexpected text after the closing quote of field 1' },
      { line: 3, fields: ['3', '4'] },
    ]);
  });

  it('a stray quote costs its own line: the lines after it are read even when they hold quotes', () => {
    const records = parseAll('a,b\n"oops,1\n2,"two"\n3,4\n');
    expect(records.map((record) => [record.line, record.fields, record.problem?.slice(0, 40)])).toEqual([
      [1, ['a', 'b'], undefined],
      [2, null, 'a quote on this line opens a field that '],
      [3, ['2', 'two'], undefined],
      [4, ['3', '4'], undefined],
    ]);
  });

  it('a quote left open at the end of the file flags its line and reads the lines after it', () => {
    const records = parseAll('a,b\n1,2\n"open,3\n4,5\n');
    expect(records[2]).toMatchObject({ line: 3, fields: null, problem: expect.stringContaining('never closed') });
    expect(records[3]).toEqual({ line: 4, fields: ['4', '5'] });
  });

  it('a row longer than the limit is reported, not kept, and the next line is read (quoted or not)', () => {
    const records = parseAll(`a,b\n${'x'.repeat(150)},1\n"${'y'.repeat(150)}",2\n3,4`, { maxRecordChars: 100 });
    expect(records.map((record) => [record.line, record.fields])).toEqual([
      [1, ['a', 'b']],
      [2, null],
      [3, null],
      [4, ['3', '4']],
    ]);
    expect(records[1]!.problem).toContain('longer than 100 characters');
    expect(records[2]!.problem).toContain('not closed within 100 characters');
  });

  it('counts lines inside quoted fields, so later rows keep their line numbers', () => {
    expect(parseAll('a\n"1\n2\n3"\nb\n').map((record) => record.line)).toEqual([1, 2, 5]);
  });

  it('uses the given delimiter', () => {
    expect(fieldsOf(parseAll('a;b\n"1;2";3\n', { delimiter: ';' }))).toEqual([[1, ['a', 'b']], [2, ['1;2', '3']]]);
    expect(() => new CsvRecordParser({ maxRecordChars: 10, delimiter: '"' })).toThrow(/delimiter/);
  });

  it('reads CR-only files, counting a CR inside quotes and every kind of line break as a line', () => {
    expect(fieldsOf(parseAll('a,b\r1,"x\ry"\r2,3'))).toEqual([[1, ['a', 'b']], [2, ['1', 'x\ry']], [4, ['2', '3']]]);
    expect(fieldsOf(parseAll('a\r\r\nb\r\n\r\nc'))).toEqual([[1, ['a']], [3, ['b']], [5, ['c']]]);
  });

  it('keeps a byte order mark in the first field (the header trims it)', () => {
    expect(fieldsOf(parseAll('\uFEFFa,b\n1,2\n'))).toEqual([[1, ['\uFEFFa', 'b']], [2, ['1', '2']]]);
  });

  it('skips a line holding one empty or blank field, quoted or not, but not one with blank fields', () => {
    expect(fieldsOf(parseAll('a,b\n""\n\t \u00a0\n , \n'))).toEqual([[1, ['a', 'b']], [4, [' ', ' ']]]);
  });

  it('keeps single-line rows with another number of fields (the validator reports them)', () => {
    expect(fieldsOf(parseAll('a,b\n1\n1,2,3\n'))).toEqual([[1, ['a', 'b']], [2, ['1']], [3, ['1', '2', '3']]]);
  });

  it('reads a quoted field over lines that leaves another number of fields than the header as a stray quote', () => {
    const records = parseAll('a,b\n"x\ny"\n1,2\n');
    expect(records.map((record) => [record.line, record.fields, record.problem?.slice(0, 40)])).toEqual([
      [1, ['a', 'b'], undefined],
      [2, null, 'a quote on this line opens a field that '],
      [3, ['y"'], undefined],
      [4, ['1', '2'], undefined],
    ]);
  });

  it('flags text after a closing quote, also after a field over lines (then read as a stray quote)', () => {
    expect(parseAll('a,b\n"x"y\n"1\n2"z,3\n4,5').slice(1).map((record) => [record.line, record.fields, record.problem?.slice(0, 30)])).toEqual([
      [2, ['xy'], 'unexpected text after the clos'],
      [3, null, 'a quote on this line opens a f'],
      [4, ['2"z', '3'], undefined],
      [5, ['4', '5'], undefined],
    ]);
  });

  it('empty fields around a quoted one, with another delimiter', () => {
    expect(fieldsOf(parseAll('a\tb\t\n\t"x"\t\n', { delimiter: '\t' }))).toEqual([[1, ['a', 'b', '']], [2, ['', 'x', '']]]);
  });

  it('a lone quote at the end of the file is never closed', () => {
    expect(parseAll('a\n"')[1]).toMatchObject({ line: 2, fields: null, problem: expect.stringContaining('never closed') });
  });

  it('reads a row of exactly the limit, and keeps line numbers after a too-long row whose quoted field held a line break', () => {
    const text = `a\n${'x'.repeat(10)}\n${'y'.repeat(11)}\nz\n"${'q'.repeat(8)}"\nw`;
    expect(parseAll(text, { maxRecordChars: 10 }).map((record) => [record.line, record.fields])).toEqual([
      [1, ['a']], [2, ['x'.repeat(10)]], [3, null], [4, ['z']], [5, ['q'.repeat(8)]], [6, ['w']],
    ]);
    const records = parseAll(`a,b\n"x\ny",${'z'.repeat(150)}\n3,4\n`, { maxRecordChars: 100 });
    expect(records.map((record) => [record.line, record.fields])).toEqual([[1, ['a', 'b']], [2, null], [4, ['3', '4']]]);
    expect(records[1]!.problem).toContain('longer than 100 characters');
  });

  it('one limit for quoted and unquoted fields: a row of the limit is read, one character more is not, however the text is split', () => {
    const max = 64;
    const parse = (pieces: string[]): CsvRecord[] => {
      const parser = new CsvRecordParser({ maxRecordChars: max });
      const out: CsvRecord[] = [];
      for (const piece of pieces) parser.push(piece, out);
      parser.end(out);
      return out;
    };
    // Rows of `chars` characters (line break excluded) ending in a field of each shape: unquoted, quoted, quoted over
    // two lines (its closing quote the row's last character), quoted with an escaped quote at its end.
    const shapes: Array<[string, (chars: number) => string]> = [
      ['unquoted', (chars) => `A1,${'x'.repeat(chars - 3)}`],
      ['quoted', (chars) => `A1,"${'x'.repeat(chars - 5)}"`],
      ['quoted over two lines', (chars) => `A1,"${'x'.repeat(chars - 13)}\nB2,tail"`],
      ['quoted with an escaped quote', (chars) => `A1,"${'x'.repeat(chars - 7)}"""`],
    ];
    for (const [shape, row] of shapes) {
      for (const chars of [max - 1, max, max + 1, max + 2]) {
        const what = `${shape}, ${chars} characters`;
        expect(row(chars), what).toHaveLength(chars);
        const text = `sku,name\n${row(chars)}\nC3,ok\n`;
        const whole = parse([text]);
        const second = whole.find((record) => record.line === 2)!;
        if (chars <= max) expect(second, what).toMatchObject({ fields: [expect.any(String), expect.any(String)] });
        else expect(second, what).toMatchObject({ fields: null, problem: expect.stringMatching(/longer than 64 characters|not closed within 64 characters/) });
        expect(whole.at(-1), what).toEqual({ line: shape === 'quoted over two lines' ? 4 : 3, fields: ['C3', 'ok'] });
        for (let cut = 1; cut < text.length; cut++) {
          expect(parse([text.slice(0, cut), text.slice(cut)]), `${what}, cut at ${cut}`).toEqual(whole);
        }
        expect(parseAll(text, { maxRecordChars: max }), what).toEqual(whole);
      }
    }
    // A quoted field that opens past the limit, over two lines: it costs its first line only, also when a piece ends
    // right before its opening quote.
    const late = `sku,name\nA1${'x'.repeat(max - 2)},"y\nz,w"\nC3,ok\n`;
    const whole = parse([late]);
    expect(whole.map((record) => [record.line, record.fields])).toEqual([[1, ['sku', 'name']], [2, null], [3, ['z', 'w"']], [4, ['C3', 'ok']]]);
    for (let cut = 1; cut < late.length; cut++) expect(parse([late.slice(0, cut), late.slice(cut)]), `cut at ${cut}`).toEqual(whole);
  });
});

const object = { bucket: 'b', key: 'k.csv', encoding: 'utf-8' };
const header = (...names: string[]) => ({ line: 1, fields: names });

describe('readHeader', () => {
  it('maps columns case-insensitively, in any order, with optional columns left out and export columns ignored', () => {
    const layout = readHeader(productsProfile, header('_row', ' SKU ', 'Price', 'name', 'quantity', 'status', '_errors'), object);
    expect(layout.columns.map((column) => column.name)).toEqual(['sku', 'name', 'price', 'quantity', 'status']);
    expect(layout.fieldIndex).toEqual([1, 3, 2, 4, 5]);
  });

  it('lists every problem at once', () => {
    expect(() => readHeader(productsProfile, header('sku', 'sku', 'colour', '', 'price'), object)).toThrow(
      /missing required column\(s\): name, quantity, status; unknown column\(s\): "colour", \(unnamed column 4\); duplicate column\(s\): "sku" \(columns 1, 2\)/,
    );
  });

  it('recognises a UTF-8 byte order mark read as Latin-1', () => {
    expect(() => readHeader(productsProfile, header('\u00ef\u00bb\u00bfsku', 'name'), { ...object, encoding: 'latin1' })).toThrow(
      /import it with encoding utf-8/,
    );
  });

  it('refuses a header far wider than the profile can use before analysing its names (a line may hold a million)', () => {
    const refusal = (fields: string[]): PermanentJobError => {
      try {
        readHeader(productsProfile, { line: 1, fields }, object);
      } catch (error) {
        if (error instanceof PermanentJobError) return error;
        throw error;
      }
      throw new Error('the header was accepted');
    };
    const widest = productsProfile.columns.length + HEADER_EXTRA_FIELDS;
    // 200,000 times the same name: refused for its width, no list of 200,000 positions built or reported.
    const repeated = refusal(new Array<string>(200_000).fill('sku'));
    expect(repeated.code).toBe('CSV_HEADER_INVALID');
    expect(repeated.message).toContain(`200,000 columns, more than it can use (at most ${widest}`);
    expect(repeated.message).toContain('missing required column(s): name, price, quantity, status');
    expect(repeated.message).not.toContain('duplicate column(s)');
    expect(repeated.context).toMatchObject({ columns: 200_000, maxColumns: widest, duplicates: [], unknown: [] });
    expect(repeated.message.length + JSON.stringify(repeated.context).length).toBeLessThan(2_000);
    // Unknown names are still counted, the first few named.
    const unknown = refusal([...productsProfile.columns.map((column) => column.name), ...Array.from({ length: 200_000 }, (_, index) => `c${index}`)]);
    expect(unknown.message).toContain('200,010 columns, more than it can use');
    expect(unknown.message).toContain('unknown column(s): "c0", "c1", "c2"');
    expect(unknown.message).toContain('… and 199980 more');
    expect(unknown.context).toMatchObject({ unknownCount: 200_000, missing: [] });
    expect(unknown.context.unknown).toHaveLength(20);
    // As wide as allowed: analysed, its duplicates reported with the first positions of each.
    const atLimit = refusal(new Array<string>(widest).fill('sku'));
    expect(atLimit.message).not.toContain('more than it can use');
    expect(atLimit.message).toContain(`duplicate column(s): "sku" (columns 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 … and ${widest - 20} more)`);
    expect(atLimit.context).toMatchObject({ duplicates: [expect.stringContaining('"sku" (columns 1, 2, 3')] });
  });
});

const everyType: ImportProfile = defineProfile({
  name: 'every-type',
  description: 'test profile',
  target: { table: 'things', naturalKey: ['code'], tenantColumn: 'tenant_id' },
  columns: [
    { name: 'code', type: 'text', required: true, maxLength: 5, pattern: /^[A-Z]+$/, patternHint: 'capital letters' },
    { name: 'count', type: 'integer', min: 0, max: 10 },
    { name: 'amount', type: 'decimal', min: -1, max: 100, scale: 2 },
    { name: 'flag', type: 'boolean' },
    { name: 'day', type: 'date' },
    { name: 'colour', type: 'enum', values: ['Red', 'Green'] },
  ],
});

describe('RowValidator', () => {
  const validator = new RowValidator(readHeader(everyType, header('code', 'count', 'amount', 'flag', 'day', 'colour'), object));

  it('normalises valid values and says when they differ from what was written', () => {
    expect(validator.check(['ABC', '007', '+1.50', 'Yes', '2024-02-29', 'red'])).toEqual({
      ok: true,
      values: ['ABC', '7', '1.50', 'true', '2024-02-29', 'Red'],
      exact: false,
    });
    expect(validator.check(['ABC', '', '', '', '', ''])).toEqual({ ok: true, values: ['ABC', null, null, null, null, null], exact: true });
  });

  it('reports every broken rule of a row', () => {
    const result = validator.check(['abcdef', '11', '1.234', 'maybe', '2023-02-29', 'Blue']);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues.map((issue) => [issue.column, issue.rule])).toEqual([
      ['code', 'max_length'],
      ['count', 'range'],
      ['amount', 'scale'],
      ['flag', 'type'],
      ['day', 'type'],
      ['colour', 'enum'],
    ]);
    expect(result.issues[5]!.message).toBe('colour must be one of Red, Green, got "Blue"');
  });

  it.each([
    [['', '1', '1', 'true', '2024-01-01', 'Red'], 'code', 'required'],
    [['abc', '1', '1', 'true', '2024-01-01', 'Red'], 'code', 'pattern'],
    [['A', '1.5', '1', 'true', '2024-01-01', 'Red'], 'count', 'type'],
    [['A', '1', '1,5', 'true', '2024-01-01', 'Red'], 'amount', 'type'],
    [['A', '1', '-2', 'true', '2024-01-01', 'Red'], 'amount', 'range'],
    [['A', '1', '1', 'true', '01/02/2024', 'Red'], 'day', 'type'],
    [['A\uFFFD', '1', '1', 'true', '2024-01-01', 'Red'], 'code', 'encoding'],
  ])('%j breaks %s/%s', (fields, column, rule) => {
    const result = validator.check(fields);
    expect(result).toEqual({ ok: false, issues: [expect.objectContaining({ column, rule })] });
  });

  it('checks the field count before anything else', () => {
    expect(validator.check(['A', '1'])).toEqual({
      ok: false,
      issues: [{ column: null, rule: 'field_count', message: 'the row has 2 field(s), the header has 6' }],
    });
  });

  it.each([
    [[' ABC\u00a0', '0', '100.00', 'TRUE', '', 'RED'], ['ABC', '0', '100.00', 'true', null, 'Red']],
    [['\uFEFFA', '10', '-1.00', 'f', '', 'Green'], ['A', '10', '-1.00', 'false', null, 'Green']],
    [['A', '-0', '1.', '', '', ''], ['A', '0', '1', null, null, null]],
    [['A', '+3', '.5', '', '', ''], ['A', '3', '.5', null, null, null]],
    [['A', '010', '+.50', '', '', ''], ['A', '10', '.50', null, null, null]],
  ])('trims Unicode white space and normalises signs, zeros and points: %j', (fields, values) => {
    expect(validator.check(fields)).toEqual({ ok: true, values, exact: false });
  });

  it('checks ranges, scale and size at the edges', () => {
    const rules = (fields: string[]) => {
      const result = validator.check(fields);
      return result.ok ? [] : result.issues.map((issue) => [issue.column, issue.rule, issue.message]);
    };
    expect(rules(['A', '11', '100.01', '', '', ''])).toEqual([
      ['count', 'range', 'count must be at most 10, got "11"'],
      ['amount', 'range', 'amount must be at most 100, got "100.01"'],
    ]);
    expect(rules(['A', '-1', '-1.01', '', '', ''])).toEqual([
      ['count', 'range', 'count must be at least 0, got "-1"'],
      ['amount', 'range', 'amount must be at least -1, got "-1.01"'],
    ]);
    expect(rules(['A', '9007199254740993', '1.001', '', '', ''])).toEqual([
      ['count', 'range', 'count is too large, got "9007199254740993"'],
      ['amount', 'scale', 'amount may have at most 2 digit(s) after the point, got "1.001"'],
    ]);
    expect(rules(['A', '1 0', '.', '', '', ''])).toEqual([
      ['count', 'type', 'count must be a whole number, got "1 0"'],
      ['amount', 'type', 'amount must be a number such as 12.50, got "."'],
    ]);
  });

  it('suggests the decimal point when a comma was used', () => {
    const result = validator.check(['A', '1', '1,5', '', '', '']);
    expect(!result.ok && result.issues[0]!.message).toContain('use "." as the decimal point');
  });
});

describe('profiles', () => {
  it('refuses definitions that would produce wrong SQL or an unusable key', () => {
    const base = everyType;
    expect(() => defineProfile({ ...base, target: { ...base.target, table: 'things; drop table x' } })).toThrow(ProfileDefinitionError);
    expect(() => defineProfile({ ...base, target: { ...base.target, naturalKey: ['count'] } })).toThrow(/must be required/);
    expect(() => defineProfile({ ...base, columns: [...base.columns, { name: 'code', type: 'text' }] })).toThrow(/defined twice/);
    expect(() => defineProfile({ ...base, columns: [...base.columns, { name: 'shade', type: 'enum' }] })).toThrow(/lists no values/);
  });

  it('the upsert statement works on tenant + natural key, in key order, and only updates rows whose values changed', () => {
    const statements = buildTargetStatements(productsProfile, productsProfile.columns, 'acme', 7);
    expect(statements.upsert.text).toContain('ON CONFLICT (tenant_id, sku) DO UPDATE SET');
    expect(statements.upsert.text).toMatch(/WHERE \(t\.name, .*\) IS DISTINCT FROM \(excluded\.name, /);
    expect(statements.upsert.text).toContain('ORDER BY u.c1');
    expect(statements.upsert.text).toContain('u.c8::bigint');
    expect(referenceColumns(productsProfile.columns).map((reference) => reference.table)).toEqual(['categories', 'suppliers', 'locations']);
    expect(statements.copySql).toMatch(/^COPY products \(tenant_id, sku, .*, location_id, last_import_job_id\) FROM STDIN$/);
  });

  it('builds COPY lines with the tenant and job id, escaping what COPY text must escape', () => {
    const { copyLine } = buildTargetStatements(productsProfile, productsProfile.columns, 'a\tb', 7);
    expect(copyLine(['SKU-1', 'back\\slash\nline', null])).toBe('a\\tb\tSKU-1\tback\\\\slash\\nline\t\\N\t7\n');
  });

});

describe('failed-rows export quoting', () => {
  it('quotes what the delimiter, quotes, line breaks or edge spaces would break', () => {
    const comma = csvFieldFor(',');
    expect(['a', 'a,b', 'say "x"', 'two\nlines', ' padded', 'a;b'].map(comma)).toEqual([
      'a', '"a,b"', '"say ""x"""', '"two\nlines"', '" padded"', 'a;b',
    ]);
    expect(csvFieldFor('\t')('a\tb')).toBe('"a\tb"');
    expect(csvFieldFor('|')('a|b')).toBe('"a|b"');
  });
});

describe('formula escape of the failed-rows export', () => {
  it('escapes what a spreadsheet would evaluate, and unescaping gives back every value exactly', () => {
    const values = ['=1+1', '+1', '-1', '@x', '\tx', '\rx', "'=x", "''-x", "'x", "'", '', 'a=b', 'plain', ' =x', "'\t"];
    for (const value of values) {
      const escaped = escapeFormula(value);
      expect(escaped, value).not.toMatch(/^[=+\-@\t\r]/);
      expect(unescapeFormula(escaped), value).toBe(value);
    }
    expect(values.map(escapeFormula)).toEqual(["'=1+1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "''=x", "'''-x", "'x", "'", '', 'a=b', 'plain', ' =x', "''\t"]);
  });

  it('escapes a formula a spreadsheet splitting on another separator would find inside a value, and imports it back', () => {
    const values = ['x;=HYPERLINK(D2);', 'a,=1+1', 'a;"=1', 'a| @x', 'a\t-1', "x;'=1", 'x;\'\'-1', '=a;=b', '\t=x', '10, -5', 'a;b', 'a-b=c', 'a ;x',
      "x\n=cmd|' /C calc'!A0;", 'x\r\n+1', "x\n'@y", 'a\nb'];
    // Each spreadsheet's split (a line break too: read by another separator, the quote opens nothing and the break
    // starts a row): no piece may start (after spaces and quotes) with a trigger.
    for (const value of values) {
      const escaped = escapeFormula(value);
      for (const piece of escaped.split(/[,;\t|\r\n]/)) expect(piece.replace(/^[ "]*/, ''), `${value} → ${escaped}`).not.toMatch(/^[=+\-@]/);
      expect(unescapeFormula(escaped), value).toBe(value);
    }
    expect(['x;=HYPERLINK(D2);', 'a,=1+1', '10, -5', 'a;b', 'a-b=c'].map(escapeFormula)).toEqual(["x;'=HYPERLINK(D2);", "a,'=1+1", "10, '-5", 'a;b', 'a-b=c']);
  });
});

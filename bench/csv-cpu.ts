// npm run bench:csv-cpu — the worker's own CPU per step of a CSV import, without a database or S3: decode,
// split into records (ours vs csv-parse 7.0.3, the library most Node importers use, on the same pieces), validate
// against the products profile, and build the COPY lines finalize sends into products. Streaming like the worker (records are not
// kept), best of --rounds, N rows (default 1,000,000) of the bench:csv products file.
//
//   npm run bench:csv-cpu
//   npm run bench:csv-cpu -- --rows 200000 --rounds 5
import { parseArgs } from 'node:util';
import { parse as csvParse } from 'csv-parse';
import { readHeader } from '../worker/imports/csv/header.js';
import { findProfile } from '../worker/imports/csv/profiles/index.js';
import { CsvRecordParser, type CsvRecord } from '../worker/imports/csv/record-parser.js';
import { RowValidator } from '../worker/imports/csv/row-validator.js';
import { buildTargetStatements } from '../worker/imports/csv/target-sql.js';
import { PRODUCTS_CSV_HEADER, productsCsvLine } from './csv/products-file.js';

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '3' } } });
const rows = Number(args.rows);
const rounds = Number(args.rounds);
if (!Number.isSafeInteger(rows) || rows < 1 || !Number.isSafeInteger(rounds) || rounds < 1) throw new Error('usage: bench/csv-cpu.ts [--rows N] [--rounds N]');

function productsFile(count: number): Buffer {
  const lines = [PRODUCTS_CSV_HEADER];
  for (let i = 1; i <= count; i++) lines.push(productsCsvLine(i));
  return Buffer.from(lines.join(''));
}

const file = productsFile(rows);
const pieces: Buffer[] = [];
for (let offset = 0; offset < file.length; offset += 65_536) pieces.push(file.subarray(offset, offset + 65_536));
const profile = findProfile('products')!;
const { copyLine } = buildTargetStatements(profile, profile.columns, 'bench', 1);

interface Timing {
  decode: number;
  parse: number;
  validate: number;
  copyLines: number;
  csvParse: number;
}

async function csvParseMs(): Promise<number> {
  const started = performance.now();
  let records = 0;
  const parser = csvParse({ relax_column_count: true });
  parser.on('readable', () => {
    while (parser.read() !== null) records += 1;
  });
  const done = new Promise<void>((resolve, reject) => parser.on('end', resolve).on('error', reject));
  for (const piece of pieces) parser.write(piece);
  parser.end();
  await done;
  if (records !== rows + 1) throw new Error(`csv-parse read ${records} records`);
  return performance.now() - started;
}

function oursMs(): Timing {
  const timing: Timing = { decode: 0, parse: 0, validate: 0, copyLines: 0, csvParse: 0 };
  const decoder = new TextDecoder('utf-8');
  const parser = new CsvRecordParser({ maxRecordChars: 1 << 20 });
  let validator: RowValidator | undefined;
  let lines: string[] = [];
  let built = 0;
  const records: CsvRecord[] = [];
  const checks: Array<ReturnType<RowValidator['check']>> = [];
  // Timed per piece, not per row: a timer call per row would weigh as much as the work.
  const handle = () => {
    if (!validator && records.length > 0) {
      validator = new RowValidator(readHeader(profile, records.shift()!, { bucket: 'b', key: 'k', encoding: 'utf-8' }));
    }
    let started = performance.now();
    for (const record of records) checks.push(validator!.check(record.fields!));
    timing.validate += performance.now() - started;
    started = performance.now();
    for (let index = 0; index < records.length; index++) {
      const check = checks[index]!;
      if (!check.ok) throw new Error(`row ${records[index]!.line} is invalid`);
      lines.push(copyLine(check.values));
      if (lines.length === 500) {
        built += lines.join('').length;
        lines = [];
      }
    }
    timing.copyLines += performance.now() - started;
    records.length = 0;
    checks.length = 0;
  };
  for (const piece of pieces) {
    let started = performance.now();
    const text = decoder.decode(piece, { stream: true });
    timing.decode += performance.now() - started;
    started = performance.now();
    parser.push(text, records);
    timing.parse += performance.now() - started;
    handle();
  }
  parser.end(records);
  handle();
  if (built === 0) throw new Error('no COPY lines built');
  return timing;
}

const best: Timing = { decode: Infinity, parse: Infinity, validate: Infinity, copyLines: Infinity, csvParse: Infinity };
for (let round = 1; round <= rounds; round++) {
  const timing = oursMs();
  timing.csvParse = await csvParseMs();
  for (const key of Object.keys(best) as Array<keyof Timing>) best[key] = Math.min(best[key], timing[key]);
  process.stdout.write(`round ${round}: ${Object.entries(timing).map(([key, ms]) => `${key} ${ms.toFixed(0)} ms`).join(', ')}\n`);
}
const fmt = (ms: number) => `${ms.toFixed(0).padStart(6)} ms  ${Math.round(rows / (ms / 1000)).toLocaleString('en').padStart(11)} rows/s`;
process.stdout.write(
  [
    '',
    `worker CPU per step, ${rows.toLocaleString('en')} product rows (${(file.length / 1048576).toFixed(0)} MiB), best of ${rounds}:`,
    `  decode (TextDecoder)                 ${fmt(best.decode)}`,
    `  split into records — ours            ${fmt(best.parse)}`,
    `  split into records — csv-parse 7.0.3 ${fmt(best.csvParse)}   (ours ${(best.csvParse / best.parse).toFixed(1)}× faster)`,
    `  validate (products profile)          ${fmt(best.validate)}`,
    `  build COPY lines (into products)     ${fmt(best.copyLines)}`,
    `  worker total (ours)                  ${fmt(best.decode + best.parse + best.validate + best.copyLines)}`,
    '',
  ].join('\n'),
);

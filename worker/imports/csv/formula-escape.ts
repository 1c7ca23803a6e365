// Spreadsheet formula injection in the failed-rows export (`bulk-import errors <id> --csv`): a cell that starts with
// `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets when the
// user opens the export, and a file's values are whatever an uploader wrote. The export prefixes such cells with `'`,
// which spreadsheets show as "this is text" (and drop when saving the sheet back to CSV).
//
// The export must still import as it is once corrected, so the importer removes that `'` again — only in files that
// carry the export's `_row`/`_errors` columns (header.ts), so a user's own file is never changed. To make the round
// trip exact, a value that itself starts with `'`s followed by a trigger character (`'=x`) gets one more `'` on export
// (`''=x`), and import removes exactly one: every value comes back as it was.
const TRIGGER = /^'*[=+\-@\t\r]/;
const ESCAPED = /^'+[=+\-@\t\r]/;

/** The cell as the export writes it: `'` + value when a spreadsheet would take it for a formula. */
export function escapeFormula(value: string): string {
  return TRIGGER.test(value) ? `'${value}` : value;
}

/** The inverse of escapeFormula, for fields of an exported file being imported again. */
export function unescapeFormula(value: string): string {
  return ESCAPED.test(value) ? value.slice(1) : value;
}

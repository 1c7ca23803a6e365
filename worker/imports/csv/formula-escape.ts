// Spreadsheet formula injection in the failed-rows export (`bulk-import errors <id> --csv`): a cell that starts with
// `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets when the
// user opens the export, and a file's values are whatever an uploader wrote. The export prefixes such cells with `'`,
// which spreadsheets show as "this is text" (and drop when saving the sheet back to CSV).
//
// The export must still import as it is once corrected, so the importer removes that `'` again — only in files that
// carry the export's `_row`/`_errors` columns (header.ts), so a user's own file is never changed. To make the round
// trip exact, a value that itself starts with `'`s followed by a trigger character (`'=x`) gets one more `'` on export
// (`''=x`), and import removes exactly one: every value comes back as it was.
//
// A spreadsheet set to another separator splits a cell where the export did not: Excel in a `;` locale opens a comma
// file by `;`, and the text after it starts a cell of its own (`x;=HYPERLINK(…)`), quoted or not (a quote that does not
// open the field it is in quotes nothing). So inside a value too, a trigger after a character some locale splits on
// (`,` `;` tab `|`, then spaces or double quotes) gets a `'` before it, and import removes exactly that one as well.
// A line break in a quoted value splits too: read by another separator the quote opens nothing, the break ends the
// row, and what follows it is the next row's first cell.
const TRIGGER = /^'*[=+\-@\t\r]/;
const ESCAPED = /^'+[=+\-@\t\r]/;
const INNER_TRIGGER = /([,;\t|\r\n][ "]*)('*[=+\-@])/g;
const INNER_ESCAPED = /([,;\t|\r\n][ "]*)'('*[=+\-@])/g;

/** The cell as the export writes it: `'` before what a spreadsheet would take for the start of a formula. */
export function escapeFormula(value: string): string {
  return (TRIGGER.test(value) ? `'${value}` : value).replace(INNER_TRIGGER, "$1'$2");
}

/** The inverse of escapeFormula, for fields of an exported file being imported again. */
export function unescapeFormula(value: string): string {
  const inner = value.replace(INNER_ESCAPED, '$1$2');
  return ESCAPED.test(inner) ? inner.slice(1) : inner;
}

// Import profiles: what a CSV file must look like and where its rows go. A profile is plain data in code (one module
// per profile under profiles/); defineProfile() checks the definition itself once, at start-up, so a mistake in a
// profile fails loudly instead of producing wrong SQL.

export const COLUMN_TYPES = ['text', 'integer', 'decimal', 'boolean', 'date', 'enum'] as const;
export type ColumnType = (typeof COLUMN_TYPES)[number];

export interface ColumnSpec {
  /** The header name in the file (matched case-insensitively, surrounding spaces ignored). */
  name: string;
  type: ColumnType;
  /** An empty value is an error (and the column must be in the header). Default false: empty means NULL. */
  required?: boolean;
  /** Text: at most this many characters. */
  maxLength?: number;
  /** Text: the whole value must match. `patternHint` says in words what is expected. */
  pattern?: RegExp;
  patternHint?: string;
  /** Integer and decimal: inclusive range. */
  min?: number;
  max?: number;
  /** Decimal: at most this many digits after the point. */
  scale?: number;
  /** Enum: the allowed values (matched case-insensitively, stored as written here). */
  values?: readonly string[];
  /**
   * The value names a row of a reference table (id, tenant_id, name), created when missing; the target column gets
   * its id.
   */
  reference?: { table: string };
  /** The target table's column; default the column name. For a reference, the column that holds the id. */
  target?: string;
}

export interface ImportProfile {
  name: string;
  description: string;
  target: {
    table: string;
    /** Column names (of the profile) whose values identify a row; the target has a unique index on tenant + these. */
    naturalKey: readonly string[];
    tenantColumn: string;
    /** Set to now() whenever an import changes a row. */
    updatedAtColumn?: string;
    /** Set to the import's job id whenever an import writes a row. */
    jobColumn?: string;
  };
  columns: readonly ColumnSpec[];
}

export class ProfileDefinitionError extends Error {
  constructor(profile: string, problem: string) {
    super(`import profile "${profile}" is invalid: ${problem}`);
    this.name = 'ProfileDefinitionError';
  }
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
/** Header names the error export adds (`bulk-import errors <id> --csv`): ignored on import, so a fixed export imports as is. */
export const ANNOTATION_COLUMNS = ['_row', '_errors'] as const;

/** Whether a header name is one of ANNOTATION_COLUMNS (case-insensitive, surrounding spaces ignored). */
export function isAnnotationColumn(name: string): boolean {
  return (ANNOTATION_COLUMNS as readonly string[]).includes(name.trim().toLowerCase());
}

/** Checks a profile definition: identifiers safe to put in SQL, a natural key made of required columns, sane rules. */
export function defineProfile(profile: ImportProfile): ImportProfile {
  const fail = (problem: string): never => {
    throw new ProfileDefinitionError(profile.name, problem);
  };
  if (!/^[a-z][a-z0-9-]{0,63}$/.test(profile.name)) fail('name must be lowercase letters, digits and hyphens');
  const { target } = profile;
  for (const identifier of [target.table, target.tenantColumn, target.updatedAtColumn, target.jobColumn]) {
    if (identifier !== undefined && !IDENTIFIER.test(identifier)) fail(`"${identifier}" is not a plain SQL identifier`);
  }
  if (profile.columns.length === 0) fail('it has no columns');
  const names = new Set<string>();
  const targets = new Set<string>();
  for (const column of profile.columns) {
    if (!IDENTIFIER.test(column.name)) fail(`column name "${column.name}" must be lowercase letters, digits and _`);
    if (names.has(column.name)) fail(`column "${column.name}" is defined twice`);
    names.add(column.name);
    const targetColumn = targetColumnOf(column);
    if (!IDENTIFIER.test(targetColumn)) fail(`target column "${targetColumn}" is not a plain SQL identifier`);
    if (targets.has(targetColumn)) fail(`two columns write the target column "${targetColumn}"`);
    targets.add(targetColumn);
    if (!(COLUMN_TYPES as readonly string[]).includes(column.type)) fail(`column "${column.name}" has unknown type ${column.type}`);
    if (column.type === 'enum' && (!column.values || column.values.length === 0)) fail(`enum column "${column.name}" lists no values`);
    if (column.type !== 'enum' && column.values) fail(`column "${column.name}" lists values but is not an enum`);
    if ((column.min !== undefined || column.max !== undefined) && column.type !== 'integer' && column.type !== 'decimal') {
      fail(`column "${column.name}" has a range but is not a number`);
    }
    if (column.scale !== undefined && column.type !== 'decimal') fail(`column "${column.name}" has a scale but is not a decimal`);
    if (column.reference) {
      if (!IDENTIFIER.test(column.reference.table)) fail(`reference table "${column.reference.table}" is not a plain SQL identifier`);
      if (column.type !== 'text') fail(`reference column "${column.name}" must be of type text (it holds a name)`);
    }
  }
  if (target.naturalKey.length === 0) fail('the natural key is empty');
  for (const key of target.naturalKey) {
    const column = profile.columns.find((candidate) => candidate.name === key);
    if (!column) fail(`natural key column "${key}" is not a column`);
    else if (!column.required) fail(`natural key column "${key}" must be required`);
    else if (column.reference) fail(`natural key column "${key}" cannot be a reference`);
  }
  for (const reserved of [target.tenantColumn, target.updatedAtColumn, target.jobColumn]) {
    if (reserved !== undefined && targets.has(reserved)) fail(`column target "${reserved}" is reserved by the profile's target`);
  }
  return profile;
}

export function targetColumnOf(column: ColumnSpec): string {
  return column.target ?? column.name;
}

/** The SQL type a validated text value is cast to when written. */
export function sqlTypeOf(column: ColumnSpec): string {
  switch (column.type) {
    case 'integer':
      return 'bigint';
    case 'decimal':
      return 'numeric';
    case 'boolean':
      return 'boolean';
    case 'date':
      return 'date';
    default:
      return 'text';
  }
}

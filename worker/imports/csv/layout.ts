// The header layout of a validated run, rebuilt from its stored header. Finalize reads the file with the columns
// validation found in it: if the profile changed in between (a deploy during the review) so that the same header maps
// differently, the run stops with a clear message instead of writing values into the wrong columns.
import { PermanentJobError } from '../../queue/errors.js';
import { readHeader, type HeaderLayout } from './header.js';
import type { ImportProfile } from './profile.js';
import type { CsvImportRun } from './run-record.js';

export function layoutOfRun(profile: ImportProfile, run: CsvImportRun): HeaderLayout {
  let layout: HeaderLayout;
  try {
    layout = readHeader(profile, { line: 1, fields: run.header }, { bucket: run.bucket, key: run.objectKey, encoding: 'utf-8' });
  } catch (error) {
    throw new PermanentJobError(
      `the "${profile.name}" profile changed since job ${run.jobId} was validated: ${(error as Error).message}; import the file again`,
      'CSV_PROFILE_CHANGED',
    );
  }
  const columns = layout.columns.map((column) => column.name);
  if (columns.join(',') !== run.columns.join(',')) {
    throw new PermanentJobError(
      `the "${profile.name}" profile changed since job ${run.jobId} was validated (columns ${run.columns.join(', ')}, ` +
        `now ${columns.join(', ')}); import the file again`,
      'CSV_PROFILE_CHANGED',
    );
  }
  return layout;
}

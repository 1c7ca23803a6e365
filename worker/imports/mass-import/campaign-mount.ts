// OQ-IMP-001: the import root is a campaign-only mount. It is attached to the worker for the length of a campaign
// and detached after it, so a mass import that finds no mount must fail at once — permanently, with a message that
// says so — instead of importing an empty or stale directory. See docs/DEPLOYMENT.md §6.4.
import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CAMPAIGN_MOUNT_MISSING_CODE, PermanentJobError } from '../../queue/errors.js';

export const CAMPAIGN_RUNBOOK = 'docs/DEPLOYMENT.md §6.4 "Mass import operator policy"';

export class CampaignMountMissingError extends PermanentJobError {
  constructor(importRoot: string, reason: string) {
    super(
      `no campaign mount is present at ${importRoot} (IMPORT_ROOT): ${reason}. Mass imports read only from the ` +
        'campaign mount, which is attached to the worker for the length of a campaign and removed after it. Start ' +
        `the campaign (mount on), then enqueue the import again; the runbook is ${CAMPAIGN_RUNBOOK}.`,
      CAMPAIGN_MOUNT_MISSING_CODE,
      { importRoot, reason },
      // The worker's own file system and how operators run campaigns: a tenant reads the code and that the operators
      // have the details (visible-errors.ts).
      { internal: true },
    );
    this.name = 'CampaignMountMissingError';
  }
}

/**
 * Checks that the import root is present, is a readable directory and — unless `requireMount` is off (local runs,
 * tests) — is a mount point of its own rather than a plain folder of the container's file system (the image may
 * well contain an empty /import). Returns the root's real path, against which every file is checked.
 */
export async function requireCampaignMount(importRoot: string, requireMount: boolean): Promise<string> {
  let realRoot: string;
  try {
    realRoot = await realpath(importRoot);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CampaignMountMissingError(importRoot, code === 'ENOENT' ? 'the directory does not exist' : `it cannot be resolved (${code})`);
  }
  const rootStat = await stat(realRoot);
  if (!rootStat.isDirectory()) throw new CampaignMountMissingError(importRoot, 'it is not a directory');
  try {
    await access(realRoot, constants.R_OK | constants.X_OK);
  } catch {
    throw new CampaignMountMissingError(importRoot, 'the directory is not readable by the worker');
  }
  if (requireMount && realRoot !== '/') {
    // A mount point sits on another device than its parent directory; a folder of the image's own file system does not.
    const parentStat = await stat(dirname(realRoot));
    if (parentStat.dev === rootStat.dev && parentStat.ino !== rootStat.ino) {
      throw new CampaignMountMissingError(
        importRoot,
        'it is a plain directory of the container, not a mounted file system (set IMPORT_ROOT_REQUIRE_MOUNT=false only for local runs)',
      );
    }
  }
  return realRoot;
}

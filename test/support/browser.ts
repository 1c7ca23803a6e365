// Headless Chromium for the admin-page tests: Debian's chromium at /usr/bin/chromium, driven by playwright-core (which
// brings no browser of its own). Installed with apt-get when missing (CI's fresh machine), once per machine.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export function ensureChromium(): void {
  if (existsSync(CHROMIUM)) return;
  // Several test files may ask at once: one install at a time (flock), the later ones find it there.
  const install = 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium';
  execFileSync('sh', ['-c', `flock /tmp/bulk-import-chromium.lock sh -c 'test -x ${CHROMIUM} || (${install})'`], {
    stdio: 'inherit',
    timeout: 600_000,
  });
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is still missing after apt-get install chromium`);
}

export async function launchBrowser(): Promise<Browser> {
  ensureChromium();
  // --no-sandbox: the tests run as root, where Chromium's sandbox cannot start.
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}

import { defineConfig } from 'vitest/config';
import { SlowFirstSequencer } from './test/slow-first-sequencer.js';
import { DEBIAN_POSTGRES_ENABLED, DEBIAN_POSTGRES_FILES, DEBIAN_POSTGRES_PROJECT, EMBEDDED_POSTGRES_PROJECT } from './test/projects.js';

// Each project starts its own servers and migrates its own template (test/global-setup.ts). The setup is named in the
// projects, not here: vitest runs the root's global setup as well, which would start a third set of servers.
const globalSetup = ['test/global-setup.ts'];

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: two test files at a time (across projects); each has its own database and bucket.
    maxWorkers: 2,
    sequence: { sequencer: SlowFirstSequencer },
    reporters: ['default'],
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    projects: [
      { extends: true as const, test: { name: EMBEDDED_POSTGRES_PROJECT, include: ['test/**/*.test.ts'], globalSetup } },
      ...(DEBIAN_POSTGRES_ENABLED
        ? [{ extends: true as const, test: { name: DEBIAN_POSTGRES_PROJECT, include: DEBIAN_POSTGRES_FILES, globalSetup } }]
        : []),
    ],
  },
});

import { defineConfig } from 'vitest/config';
import { DEBIAN_POSTGRES_FILES, DEBIAN_POSTGRES_PROJECT, EMBEDDED_POSTGRES_PROJECT } from './test/projects.js';

export default defineConfig({
  test: {
    // Per project: each starts its own servers (test/global-setup.ts) and migrates its own template.
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: two test files at a time (across projects); each has its own database and bucket.
    maxWorkers: 2,
    reporters: ['default'],
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    projects: [
      { extends: true, test: { name: EMBEDDED_POSTGRES_PROJECT, include: ['test/**/*.test.ts'] } },
      { extends: true, test: { name: DEBIAN_POSTGRES_PROJECT, include: DEBIAN_POSTGRES_FILES } },
    ],
  },
});

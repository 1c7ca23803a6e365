// The setting of the mass-import tests that run real worker processes: a tree of files with known bytes, and a
// fault-injecting proxy in front of the test S3 server. Made before the file's tests, removed after them, together
// with every worker process the tests spawned.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll } from 'vitest';
import type { TestEnvironment } from '../harness.js';
import { startFaultyS3Proxy, type FaultyS3Proxy } from './faulty-s3-proxy.js';
import { makeTree, type TreeFile } from './mass-import-tree.js';
import { killAll, type WorkerProcess } from './worker-processes.js';

const MiB = 1024 * 1024;

export interface TreeBehindProxy {
  readonly root: string;
  readonly proxy: FaultyS3Proxy;
  /** Worker processes to kill when the file's tests are done. */
  readonly spawned: WorkerProcess[];
  /** The settings that point a worker process at the tree (no mount required) and at S3 through the proxy. */
  workerEnv(): Record<string, string>;
}

export function useTreeBehindProxy(env: TestEnvironment, files: TreeFile[]): TreeBehindProxy {
  let root: string | undefined;
  let proxy: FaultyS3Proxy | undefined;
  const spawned: WorkerProcess[] = [];
  beforeAll(async () => {
    root = await makeTree(files);
    proxy = await startFaultyS3Proxy(env.s3Endpoint);
  });
  afterAll(async () => {
    await killAll(spawned);
    await proxy?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the tree and proxy exist only inside the tests (after beforeAll)');
    return value;
  };
  return {
    get root() {
      return ready(root);
    },
    get proxy() {
      return ready(proxy);
    },
    spawned,
    workerEnv() {
      return {
        IMPORT_ROOT: ready(root),
        IMPORT_ROOT_REQUIRE_MOUNT: 'false',
        S3_ENDPOINT: ready(proxy).endpoint,
        MASS_IMPORT_MULTIPART_THRESHOLD_BYTES: String(5 * MiB),
      };
    },
  };
}

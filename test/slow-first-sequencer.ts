// The order test files start in: the slowest first. Two files run at a time (vitest.config.ts), and a long file that
// starts last runs alone while the other worker has nothing left: on a clean checkout (no results cached, so vitest
// orders by file size) chaos-quick started last and added half a minute to the suite. Files listed here start first,
// in this order; the rest follow in vitest's own order (with cached results: the longest first). Projects still run
// one after the other. The list is the files that took 15 s or more on the CI machine, longest first.
import { relative } from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

export const SLOWEST_FILES = [
  'test/mass-import-faults.test.ts',
  'test/deploy-script.test.ts',
  'test/campaign-script.test.ts',
  'test/db-faults.test.ts',
  'test/ci-dependency-drift.test.ts',
  'test/chaos-quick.test.ts',
  'test/db-restart-kinds.test.ts',
  'test/backfill-resume.test.ts',
  'test/dependency-outage.test.ts',
  'test/admin-browser.test.ts',
  'test/runtime-image.test.ts',
  'test/infra-synth.test.ts',
  'test/ops-cli.test.ts',
  'test/mass-import-changed-files.test.ts',
  'test/queue-processes.test.ts',
  'test/mass-import-cli.test.ts',
  'test/csv-cli.test.ts',
  'test/mass-import-crash.test.ts',
  'test/mass-import-stop.test.ts',
  'test/queue-admission.test.ts',
  'test/limits.test.ts',
  'test/csv-finalize-crash.test.ts',
];

export class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const ordered = await super.sort(files);
    const rank = (spec: TestSpecification): number => {
      const index = SLOWEST_FILES.indexOf(relative(spec.project.config.root, spec.moduleId).replaceAll('\\', '/'));
      return index === -1 ? SLOWEST_FILES.length : index;
    };
    const projectOrder = new Map<string, number>();
    for (const spec of ordered) if (!projectOrder.has(spec.project.name)) projectOrder.set(spec.project.name, projectOrder.size);
    const position = new Map(ordered.map((spec, index) => [spec, index]));
    return [...ordered].sort(
      (a, b) => projectOrder.get(a.project.name)! - projectOrder.get(b.project.name)! || rank(a) - rank(b) || position.get(a)! - position.get(b)!,
    );
  }
}

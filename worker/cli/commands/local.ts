import { resolve } from 'node:path';
import type { Command } from 'commander';
import { migrate } from '../../db/migrate.js';
import { startLocalEnvironment } from '../../dev/local-environment.js';
import { printJson, printLine } from '../output.js';

export const LOCAL_BUCKET = 'bulk-import-local';
export const LOCAL_DATABASE = 'postgres';

export function registerLocalCommand(program: Command): void {
  program
    .command('local')
    .description('start the embedded Postgres and S3 servers (state under .local/), migrate, and print how to reach them')
    .option('--state-dir <dir>', 'where the embedded servers keep their data', '.local')
    .option('--json', 'print JSON only')
    .action(async (options: { stateDir: string; json?: boolean }) => {
      const environment = await startLocalEnvironment({
        stateDir: resolve(options.stateDir),
        persistent: true,
        buckets: [LOCAL_BUCKET],
      });
      const databaseUrl = environment.postgres.databaseUrl(LOCAL_DATABASE);
      await migrate(databaseUrl);
      const reach = {
        DATABASE_URL: databaseUrl,
        S3_ENDPOINT: environment.s3.endpoint,
        S3_BUCKET: LOCAL_BUCKET,
        AWS_ACCESS_KEY_ID: environment.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: environment.credentials.secretAccessKey,
      };
      if (options.json) printJson(reach);
      else {
        printLine('Embedded environment is up and migrated. In another shell:');
        for (const [name, value] of Object.entries(reach)) printLine(`  export ${name}=${value}`);
        printLine('Press Ctrl-C to stop.');
      }
      await new Promise<void>((resolveStop) => {
        process.once('SIGINT', resolveStop);
        process.once('SIGTERM', resolveStop);
      });
      await environment.stop();
    });
}

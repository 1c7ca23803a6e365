// `bulk-import api-keys create|list|revoke`: the keys of the HTTP API. A key is printed once, when it is made; the
// database keeps only its hash.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { API_KEY_ROLES, createApiKey, listApiKeys, revokeApiKey, type ApiKeyRole } from '../../auth/api-keys.js';
import { withDatabase } from '../context.js';
import { formatTable, printJson, printLine } from '../output.js';

function parseRole(value: string): ApiKeyRole {
  if (!(API_KEY_ROLES as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected ${API_KEY_ROLES.join(' or ')}`);
  return value as ApiKeyRole;
}

export function registerApiKeyCommands(program: Command): void {
  const keys = program.command('api-keys').description('keys of the HTTP API (bulk-import serve): create, list, revoke');

  keys
    .command('create')
    .description('make a key and print it once (only its hash is stored)')
    .requiredOption('--name <name>', 'the key name: the actor recorded for every action taken with it')
    .requiredOption('--role <role>', `${API_KEY_ROLES.join(' or ')}: a tenant key sees its own tenant's runs only`, parseRole)
    .option('--tenant <id>', 'with --role tenant: the tenant')
    .option('--json', 'print JSON only')
    .action(async (options: { name: string; role: ApiKeyRole; tenant?: string; json?: boolean }) => {
      const { key, apiKey } = await withDatabase((pool) => createApiKey(pool, { name: options.name, role: options.role, tenantId: options.tenant ?? null }));
      if (options.json) return printJson({ ...apiKey, key });
      printLine(`API key ${apiKey.name} (${apiKey.role}${apiKey.tenantId ? `, tenant ${apiKey.tenantId}` : ''}):`);
      printLine(key);
      printLine('Store it now: it is not shown again. Use it as: Authorization: Bearer <key>');
    });

  keys
    .command('list')
    .description('the keys (never the keys themselves: name, role, tenant, first characters)')
    .option('--all', 'include revoked keys')
    .option('--json', 'print JSON only')
    .action(async (options: { all?: boolean; json?: boolean }) => {
      const list = await withDatabase((pool) => listApiKeys(pool, { includeRevoked: options.all ?? false }));
      if (options.json) return printJson(list);
      if (list.length === 0) return printLine('No API keys.');
      printLine(
        formatTable(
          ['name', 'role', 'tenant', 'key', 'created', 'revoked'],
          list.map((key) => [key.name, key.role, key.tenantId, `${key.prefix}…`, key.createdAt, key.revokedAt]),
        ),
      );
    });

  keys
    .command('revoke <name>')
    .description('revoke the active key of that name: its next request is refused (401)')
    .option('--json', 'print JSON only')
    .action(async (name: string, options: { json?: boolean }) => {
      const key = await withDatabase((pool) => revokeApiKey(pool, name));
      if (options.json) return printJson(key);
      printLine(`API key ${key.name} revoked.`);
    });
}

// One line that says what went wrong with the database and what setting to change, for logs, the health check and
// the CLI. pg's own messages are terse ("self-signed certificate in certificate chain", "no pg_hba.conf entry …
// no encryption"); these say which of our settings decides it. Never includes the URL or a password.
import { sqlState } from './sql-state.js';

export function describeDatabaseError(error: unknown): string {
  const message = firstLine(error);
  const code = (error as { code?: unknown } | null)?.code;
  const state = sqlState(error);
  if (state === '28000' && /no encryption/i.test(message)) {
    return `${message}: the server requires TLS; set DATABASE_SSL_MODE=verify-full (with DATABASE_SSL_ROOT_CERT=<CA bundle>) or sslmode=verify-full in DATABASE_URL`;
  }
  if (/does not support SSL/i.test(message)) {
    return `${message}: the server has no TLS; set DATABASE_SSL_MODE=disable (only on a trusted network) or enable TLS on the server`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `TLS: the server's certificate does not name the host connected to (${message}); connect with the host name the certificate names, or DATABASE_SSL_MODE=verify-ca`;
  }
  if (
    typeof code === 'string' &&
    /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED)$/.test(code)
  ) {
    return `TLS: the server's certificate is not signed by a CA in DATABASE_SSL_ROOT_CERT (${message})`;
  }
  if (state === '28P01') return `${message}: check the password in DATABASE_URL (or DATABASE_IAM_AUTH and the task role)`;
  if (state === '3D000') return `${message}: check the database name in DATABASE_URL`;
  if (state === '42P01') return `${message}: the schema is missing; run \`bulk-import migrate\``;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code) && !message.includes(code)) return `${message} (${code})`;
  return message;
}

function firstLine(error: unknown): string {
  if (error instanceof Error) {
    // AggregateError (every address of a host refused) carries the reasons inside.
    const inner = (error as AggregateError).errors;
    if (!error.message && Array.isArray(inner) && inner.length > 0) return firstLine(inner[0]);
    return (error.message.split('\n')[0] ?? '').trim() || error.name;
  }
  return String(error).split('\n')[0] ?? '';
}

/** Replaces every secret in a text with `***` (for text that may quote a configuration value). */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let scrubbed = text;
  for (const secret of secrets) if (secret.length >= 3) scrubbed = scrubbed.split(secret).join('***');
  return scrubbed;
}

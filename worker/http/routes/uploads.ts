// POST /v1/uploads: a presigned S3 PUT URL for `imports/<tenant>/<uuid>.csv`, short-lived and bound to the declared
// length, so files go from the caller straight to S3 and never through this process. Then POST /v1/jobs with
// kind csv-import and the returned bucket and key.
import { randomUUID } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { FastifyInstance } from 'fastify';
import { csvUploadPrefixFor } from '../../imports/csv/payload.js';
import { TENANT_PATTERN } from '../../imports/tenant.js';
import { ApiError } from '../errors.js';
import { ERROR_RESPONSES } from '../schemas.js';
import { tenantScope, type ApiDependencies } from '../server.js';

interface UploadBody {
  contentLength: number;
  tenant?: string;
  contentType?: string;
}

export function registerUploadRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  const { limits } = deps;
  app.post<{ Body: UploadBody }>(
    '/v1/uploads',
    {
      schema: {
        tags: ['uploads'],
        summary: 'a presigned PUT URL for a CSV file of exactly contentLength bytes; submit it with POST /v1/jobs (kind csv-import)',
        body: {
          type: 'object',
          required: ['contentLength'],
          additionalProperties: false,
          properties: {
            contentLength: { type: 'integer', minimum: 1, maximum: limits.uploadMaxBytes, description: 'the exact size of the file, bytes' },
            tenant: { type: 'string', pattern: TENANT_PATTERN.source, description: 'operator keys only: the tenant the upload is for' },
            contentType: { type: 'string', enum: ['text/csv', 'application/octet-stream', 'text/plain'], default: 'text/csv' },
          },
        },
        response: {
          201: {
            type: 'object',
            properties: {
              bucket: { type: 'string' },
              key: { type: 'string' },
              url: { type: 'string' },
              method: { type: 'string' },
              headers: { type: 'object', additionalProperties: { type: 'string' } },
              expiresAt: { type: 'string', format: 'date-time' },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request, reply) => {
      if (!deps.s3 || !deps.bucket) throw new ApiError(503, 'S3_NOT_CONFIGURED', 'uploads need S3: set S3_BUCKET (and S3_ENDPOINT for an S3-compatible server)');
      const scope = tenantScope(request);
      const body = request.body;
      if (scope !== null && body.tenant !== undefined && body.tenant !== scope) {
        throw new ApiError(400, 'TENANT_MISMATCH', 'a tenant key uploads for its own tenant only', 'tenant');
      }
      const tenant = scope ?? body.tenant;
      if (!tenant) throw new ApiError(400, 'TENANT_REQUIRED', 'an operator key names the tenant the upload is for', 'tenant');
      const key = `${csvUploadPrefixFor(tenant)}${randomUUID()}.csv`;
      const contentType = body.contentType ?? 'text/csv';
      // ContentLength and ContentType are signed: S3 refuses a PUT of another size or type.
      const command = new PutObjectCommand({ Bucket: deps.bucket, Key: key, ContentLength: body.contentLength, ContentType: contentType });
      const url = await getSignedUrl(deps.s3, command, {
        expiresIn: limits.uploadExpirySeconds,
        signableHeaders: new Set(['content-length', 'content-type']),
      });
      request.log.info({ key, bytes: body.contentLength }, 'upload presigned');
      return reply.code(201).send({
        bucket: deps.bucket,
        key,
        url,
        method: 'PUT',
        headers: { 'content-length': String(body.contentLength), 'content-type': contentType },
        expiresAt: new Date(Date.now() + limits.uploadExpirySeconds * 1000).toISOString(),
      });
    },
  );
}

// GET /v1/jobs/{id}/errors: the failed rows of a CSV run or the failed files of a mass import, as JSON pages
// (keyset: row number / item number) or, with ?format=csv, every one streamed as the CLI's `errors --csv` writes it
// (same columns, same formula escaping: it is the same function). The export reads 1,000 rows at a time and waits for
// the client to take them, so memory stays flat for a million errors and a slow client slows the reads, not the heap.
// GET /v1/jobs/{id}/items: the files of a mass import, keyset-paged.
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { requireVisibleJob } from '../../actions/run-actions.js';
import { CSV_FINALIZE_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND } from '../../handlers/kinds.js';
import { pageOfRowErrors, rowErrorsExportRefusal } from '../../imports/csv/row-errors.js';
import { getCsvImportRun } from '../../imports/csv/run-record.js';
import { ITEM_STATES, listItemsAfter, type ItemRow, type ItemState } from '../../imports/mass-import/items-table.js';
import { itemErrorMessage } from '../../queue/visible-errors.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { CLIENT_CLOSED_REQUEST, whenClientGone } from '../client-gone.js';
import { ApiError } from '../errors.js';
import { CURSOR, ERROR_RESPONSES, JOB_ID_PARAMS, limitParam } from '../schemas.js';
import { actorOf, isOperatorKey, type ApiDependencies } from '../server.js';

const CSV_KINDS = new Set<string>([CSV_IMPORT_KIND, CSV_FINALIZE_KIND]);

class ClientGoneError extends Error {
  constructor() {
    super('the client closed the connection');
    this.name = 'ClientGoneError';
  }
}

/**
 * The writable the exporter writes to: gathers its many small writes (one per row) into chunks of 64 KiB for the
 * response body — a write per row would cost a socket write per row —, and once the client is gone makes the next
 * write (or the wait for `drain`) fail, so an abandoned export stops instead of waiting forever.
 */
class ExportSink extends EventEmitter {
  private gone = false;
  private pending: string[] = [];
  private pendingChars = 0;
  constructor(private readonly body: PassThrough) {
    super();
    body.on('drain', () => this.emit('drain'));
  }
  write(chunk: string): boolean {
    if (this.gone) throw new ClientGoneError();
    this.pending.push(chunk);
    this.pendingChars += chunk.length;
    return this.pendingChars < EXPORT_CHUNK_CHARS || this.flush();
  }
  /** Hands what is gathered to the body; false when the body is full (the exporter then waits for `drain`). */
  flush(): boolean {
    if (this.pending.length === 0) return true;
    const text = this.pending.join('');
    this.pending = [];
    this.pendingChars = 0;
    return this.body.write(text);
  }
  clientGone(): void {
    if (this.gone) return;
    this.gone = true;
    if (this.listenerCount('error') > 0) this.emit('error', new ClientGoneError());
  }
}

const EXPORT_CHUNK_CHARS = 64 * 1024;

/** `operator`: the caller sees every tenant; a tenant reads S3's own text as a plain sentence (visible-errors.ts). */
function itemView(item: ItemRow, operator: boolean) {
  return {
    itemNo: item.itemNo,
    path: item.relativePath,
    size: item.size,
    state: item.state,
    objectKey: item.objectKey,
    sha256: item.sha256,
    errorCode: item.errorCode,
    errorMessage: itemErrorMessage(item.errorCode, item.errorMessage, operator),
    errorClass: item.errorClass,
    tries: item.tries,
    updatedAt: item.updatedAt.toISOString(),
  };
}

const PAGE_RESPONSE = {
  type: 'object',
  properties: {
    kind: { type: 'string' },
    header: { type: 'array', items: { type: 'string' }, description: 'CSV runs: the file header the row fields follow' },
    errors: { type: 'array', items: { type: 'object', additionalProperties: true } },
    next: { type: ['string', 'null'] },
  },
} as const;

export function registerErrorRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  app.get<{ Params: { id: number }; Querystring: { format: 'json' | 'csv'; limit: number; cursor?: string } }>(
    '/v1/jobs/:id/errors',
    {
      config: { sessionCookie: true },
      schema: {
        tags: ['jobs'],
        summary: 'failed rows (CSV) or failed files (mass import): JSON pages, or ?format=csv for all of them streamed',
        params: JOB_ID_PARAMS,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { format: { type: 'string', enum: ['json', 'csv'], default: 'json' }, limit: limitParam(100, 1000), cursor: CURSOR },
        },
        response: { 200: PAGE_RESPONSE, ...ERROR_RESPONSES },
      },
    },
    async (request, reply) => {
      const job = await requireVisibleJob(deps.pool, actorOf(request), request.params.id);
      const { format, limit, cursor } = request.query;
      if (format === 'csv') {
        const handler = deps.registry.get(job.kind);
        if (!handler?.exportErrorsCsv) throw new ApiError(409, 'NO_ERROR_EXPORT', `job ${job.id} is a ${job.kind} run: that kind has no failed-row export`);
        // Asked before the answer starts: the export's own refusal would come after a 200 and its headers.
        const refusal = CSV_KINDS.has(job.kind) ? await rowErrorsExportRefusal(deps.pool, job.id) : null;
        if (refusal) throw new ApiError(409, 'NO_ERROR_EXPORT', refusal.message);
        const body = new PassThrough({ highWaterMark: 64 * 1024 });
        const sink = new ExportSink(body);
        if (!whenClientGone(request, reply, () => sink.clientGone())) {
          request.log.info({ jobId: job.id, statusCode: CLIENT_CLOSED_REQUEST }, 'errors export not started: the client left');
          return reply.code(CLIENT_CLOSED_REQUEST).send();
        }
        const export_ = handler.exportErrorsCsv(deps.pool, job.id, sink as unknown as NodeJS.WritableStream, { operator: isOperatorKey(request) });
        export_.then(
          (rows) => {
            request.log.info({ jobId: job.id, rows }, 'errors exported');
            sink.flush();
            body.end();
          },
          (error: unknown) => {
            if (!(error instanceof ClientGoneError)) request.log.error({ err: error, jobId: job.id }, 'error export failed');
            body.destroy(error instanceof Error ? error : new Error(String(error)));
          },
        );
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="job-${job.id}-errors.csv"`)
          .send(body);
      }
      if (CSV_KINDS.has(job.kind)) {
        const after = cursor ? (decodeCursor(cursor, { row: 'int32' }).row as number) : 0;
        const [run, page] = await Promise.all([getCsvImportRun(deps.pool, job.id), pageOfRowErrors(deps.pool, job.id, after, limit)]);
        const last = page.errors[page.errors.length - 1];
        return {
          kind: job.kind,
          header: run?.header ?? [],
          errors: page.errors.map((row) => ({ row: row.row, issues: row.issues, fields: row.fields })),
          // A page may hold fewer than `limit` rows and still have a next one: long rows fill its byte budget.
          next: page.more && last ? encodeCursor({ row: last.row }) : null,
        };
      }
      if (job.kind === MASS_IMPORT_KIND) {
        const after = cursor ? (decodeCursor(cursor, { item: 'int32' }).item as number) : -1;
        const items = await listItemsAfter(deps.pool, job.id, { states: ['failed'], afterItemNo: after, limit });
        const last = items[items.length - 1];
        const operator = isOperatorKey(request);
        return { kind: job.kind, errors: items.map((item) => itemView(item, operator)), next: items.length === limit && last ? encodeCursor({ item: last.itemNo }) : null };
      }
      return { kind: job.kind, errors: [], next: null };
    },
  );

  app.get<{ Params: { id: number }; Querystring: { state?: ItemState[]; limit: number; cursor?: string } }>(
    '/v1/jobs/:id/items',
    {
      schema: {
        tags: ['jobs'],
        summary: 'the files of a mass-import run in plan order, with state, size, object key and error',
        params: JOB_ID_PARAMS,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            state: { type: 'array', items: { type: 'string', enum: [...ITEM_STATES] }, maxItems: ITEM_STATES.length },
            limit: limitParam(100, 1000),
            cursor: CURSOR,
          },
        },
        response: {
          200: {
            type: 'object',
            properties: { items: { type: 'array', items: { type: 'object', additionalProperties: true } }, next: { type: ['string', 'null'] } },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request) => {
      const job = await requireVisibleJob(deps.pool, actorOf(request), request.params.id);
      if (job.kind !== MASS_IMPORT_KIND) throw new ApiError(409, 'NO_ITEMS', `job ${job.id} is a ${job.kind} run: only mass-import runs have file items`);
      const { state, limit, cursor } = request.query;
      const after = cursor ? (decodeCursor(cursor, { item: 'int32' }).item as number) : -1;
      const items = await listItemsAfter(deps.pool, job.id, { states: state, afterItemNo: after, limit });
      const last = items[items.length - 1];
      const operator = isOperatorKey(request);
      return { items: items.map((item) => itemView(item, operator)), next: items.length === limit && last ? encodeCursor({ item: last.itemNo }) : null };
    },
  );
}

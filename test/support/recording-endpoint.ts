// A local HTTP endpoint that records every request it receives and answers the way the caller expects: for
// CloudWatch (through the real @aws-sdk/client-cloudwatch) and for the ECS agent's task-protection API.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export interface RecordedRequest {
  at: number;
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  /** The body, decompressed when it came gzip-encoded. */
  body: string;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

/** How to answer a request; `'no-answer'` leaves it open (a service that hangs) until the endpoint closes. */
export type Responder = (request: RecordedRequest) => Reply | 'no-answer';

export interface RecordingEndpoint {
  url: string;
  requests: RecordedRequest[];
  /** Replaces how the endpoint answers from now on. */
  respondWith(responder: Responder): void;
  close(): Promise<void>;
}

export async function startRecordingEndpoint(responder: Responder): Promise<RecordingEndpoint> {
  const requests: RecordedRequest[] = [];
  let respond = responder;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const body = (req.headers['content-encoding'] ?? '').includes('gzip') ? gunzipSync(raw) : raw;
      const request: RecordedRequest = {
        at: Date.now(),
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body: body.toString('utf8'),
      };
      requests.push(request);
      const reply = respond(request);
      if (reply === 'no-answer') return;
      res.writeHead(reply.status, reply.headers ?? {});
      res.end(reply.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    respondWith(next) {
      respond = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---- CloudWatch -----------------------------------------------------------------------------------------------
// The pinned SDK speaks AWS JSON 1.0 to CloudWatch (query-compatible): POST / with
// `X-Amz-Target: GraniteServiceVersion20100801.PutMetricData` and a JSON body; it gzips bodies above 10 KiB.
// Older SDKs sent the form-encoded query protocol (Action=PutMetricData&MetricData.member.1.MetricName=…); both
// are parsed, so the tests keep checking bodies if the SDK's protocol changes again.

export interface MetricDatumSeen {
  MetricName: string;
  Dimensions?: Array<{ Name: string; Value: string }>;
  Value?: number;
  Unit?: string;
  Timestamp?: number | string;
  StatisticValues?: { SampleCount: number; Sum: number; Minimum: number; Maximum: number };
}

export interface PutMetricDataSeen {
  at: number;
  Namespace: string;
  MetricData: MetricDatumSeen[];
}

/** Answers every CloudWatch call with success, in the protocol the request used. */
export const cloudWatchSuccess: Responder = (request): Reply =>
  request.headers['content-type']?.includes('json')
    ? { status: 200, headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'test' }, body: '{}' }
    : {
        status: 200,
        headers: { 'content-type': 'text/xml' },
        body: '<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><ResponseMetadata><RequestId>test</RequestId></ResponseMetadata></PutMetricDataResponse>',
      };

/** Answers like an overloaded CloudWatch (HTTP 500). */
export const cloudWatchFailure: Responder = () => ({
  status: 500,
  headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-query-error': 'InternalServiceError;Receiver' },
  body: JSON.stringify({ __type: 'com.amazonaws.cloudwatch#InternalServiceFault', message: 'test outage' }),
});

/** The PutMetricData calls among the recorded requests, parsed. */
export function putMetricDataCalls(requests: RecordedRequest[]): PutMetricDataSeen[] {
  const calls: PutMetricDataSeen[] = [];
  for (const request of requests) {
    const target = request.headers['x-amz-target'];
    if (typeof target === 'string' && target.endsWith('.PutMetricData')) {
      const body = JSON.parse(request.body) as Omit<PutMetricDataSeen, 'at'>;
      calls.push({ at: request.at, Namespace: body.Namespace, MetricData: body.MetricData ?? [] });
    } else if (request.body.includes('Action=PutMetricData')) {
      calls.push({ at: request.at, ...parseQueryPutMetricData(request.body) });
    }
  }
  return calls;
}

function parseQueryPutMetricData(body: string): Omit<PutMetricDataSeen, 'at'> {
  const form = new URLSearchParams(body);
  const data = new Map<number, MetricDatumSeen>();
  for (const [name, value] of form) {
    const match = /^MetricData\.member\.(\d+)\.(.+)$/.exec(name);
    if (!match) continue;
    const datum = data.get(Number(match[1])) ?? ({ MetricName: '' } as MetricDatumSeen);
    data.set(Number(match[1]), datum);
    const field = match[2]!;
    const dimension = /^Dimensions\.member\.(\d+)\.(Name|Value)$/.exec(field);
    const statistic = /^StatisticValues\.(SampleCount|Sum|Minimum|Maximum)$/.exec(field);
    if (dimension) {
      datum.Dimensions ??= [];
      const index = Number(dimension[1]) - 1;
      datum.Dimensions[index] ??= { Name: '', Value: '' };
      datum.Dimensions[index]![dimension[2] as 'Name' | 'Value'] = value;
    } else if (statistic) {
      datum.StatisticValues ??= { SampleCount: 0, Sum: 0, Minimum: 0, Maximum: 0 };
      datum.StatisticValues[statistic[1] as 'Sum'] = Number(value);
    } else if (field === 'Value') datum.Value = Number(value);
    else if (field === 'MetricName') datum.MetricName = value;
    else if (field === 'Unit') datum.Unit = value;
    else if (field === 'Timestamp') datum.Timestamp = value;
  }
  return { Namespace: form.get('Namespace') ?? '', MetricData: [...data.entries()].sort(([a], [b]) => a - b).map(([, datum]) => datum) };
}

/** `{ Kind: 'noop' }` from a datum's dimension list ({} for a dimensionless one). */
export function dimensionsOf(datum: MetricDatumSeen): Record<string, string> {
  return Object.fromEntries((datum.Dimensions ?? []).map((dimension) => [dimension.Name, dimension.Value]));
}

// ---- ECS agent ------------------------------------------------------------------------------------------------

/** Answers task-protection calls like the ECS agent when it grants them. */
export const ecsAgentSuccess: Responder = (request) => {
  if (request.path !== '/task-protection/v1/state') return { status: 404, body: 'not found' };
  const asked = request.method === 'PUT' ? (JSON.parse(request.body) as { ProtectionEnabled?: boolean }) : {};
  return {
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      protection: {
        ProtectionEnabled: asked.ProtectionEnabled ?? false,
        ExpirationDate: asked.ProtectionEnabled ? new Date(Date.now() + 15 * 60_000).toISOString() : null,
        TaskArn: 'arn:aws:ecs:us-east-1:000000000000:task/test/0123',
      },
    }),
  };
};

/** Answers like an agent whose call to ECS failed. */
export const ecsAgentFailure: Responder = () => ({
  status: 500,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ error: { Arn: 'arn:aws:ecs:us-east-1:000000000000:task/test/0123', Code: 'ServerException', Message: 'test outage' } }),
});

/** The ProtectionEnabled values of the PUTs received, in order. */
export function protectionRequests(requests: RecordedRequest[]): boolean[] {
  return requests
    .filter((request) => request.method === 'PUT' && request.path === '/task-protection/v1/state')
    .map((request) => (JSON.parse(request.body) as { ProtectionEnabled: boolean }).ProtectionEnabled);
}

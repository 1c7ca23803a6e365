// A real OTLP/HTTP receiver for tests: the recording endpoint answering the exporter's POST /v1/traces like a
// collector does, and the spans of every export decoded from the OTLP JSON encoding (OTEL_EXPORTER_OTLP_PROTOCOL=
// http/json) into plain objects.
import { startRecordingEndpoint, type RecordingEndpoint } from './recording-endpoint.js';

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Empty for a trace's root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, string | number | boolean>;
  /** 0 unset, 1 ok, 2 error. */
  statusCode: number;
  events: string[];
  service: string;
}

export interface OtlpReceiver {
  url: string;
  endpoint: RecordingEndpoint;
  /** Every span received so far. */
  spans(): ReceivedSpan[];
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: KeyValue[];
  events?: Array<{ name: string }>;
  status?: { code?: number };
}
interface TracesExport {
  resourceSpans: Array<{ resource?: { attributes?: KeyValue[] }; scopeSpans: Array<{ spans?: OtlpSpan[] }> }>;
}

function valueOf(value: AnyValue): string | number | boolean {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  return value.boolValue ?? '';
}

function attributesOf(list: KeyValue[] = []): Record<string, string | number | boolean> {
  return Object.fromEntries(list.map(({ key, value }) => [key, valueOf(value)]));
}

/** Ids arrive hex-encoded in OTLP JSON; a base64 one (protobuf-JSON mapping) is turned into hex. */
function hexId(id: string | undefined): string {
  if (!id) return '';
  return /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex');
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const endpoint = await startRecordingEndpoint(() => ({ status: 200, headers: { 'content-type': 'application/json' }, body: '{}' }));
  return {
    url: endpoint.url,
    endpoint,
    spans() {
      const spans: ReceivedSpan[] = [];
      for (const request of endpoint.requests) {
        if (request.method !== 'POST' || request.path !== '/v1/traces') continue;
        const decoded = JSON.parse(request.body) as TracesExport;
        for (const resourceSpans of decoded.resourceSpans) {
          const service = String(attributesOf(resourceSpans.resource?.attributes)['service.name'] ?? '');
          for (const scope of resourceSpans.scopeSpans) {
            for (const span of scope.spans ?? []) {
              spans.push({
                traceId: hexId(span.traceId),
                spanId: hexId(span.spanId),
                parentSpanId: hexId(span.parentSpanId),
                name: span.name,
                kind: span.kind,
                attributes: attributesOf(span.attributes),
                statusCode: span.status?.code ?? 0,
                events: (span.events ?? []).map((event) => event.name),
                service,
              });
            }
          }
        }
      }
      return spans;
    },
    close: () => endpoint.close(),
  };
}

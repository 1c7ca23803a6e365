// SNS for tests: answers the real @aws-sdk/client-sns (AWS Query protocol: a form-encoded POST with Action=Publish,
// an XML answer) through the recording endpoint, and parses the Publish calls it received.
import { randomUUID } from 'node:crypto';
import type { RecordedRequest, Reply, Responder } from './recording-endpoint.js';

export interface PublishSeen {
  at: number;
  TopicArn: string;
  Subject: string | undefined;
  Message: string;
  /** name → StringValue */
  MessageAttributes: Record<string, string>;
  MessageGroupId: string | undefined;
  MessageDeduplicationId: string | undefined;
  /** The MessageId this endpoint answered with; undefined when it refused the call. */
  acceptedAs: string | undefined;
}

const accepted = new WeakMap<RecordedRequest, string>();

/** Accepts every Publish like SNS, with a fresh MessageId. */
export const snsSuccess: Responder = (request): Reply => {
  const messageId = randomUUID();
  accepted.set(request, messageId);
  return {
    status: 200,
    headers: { 'content-type': 'text/xml' },
    body:
      '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">' +
      `<PublishResult><MessageId>${messageId}</MessageId></PublishResult>` +
      '<ResponseMetadata><RequestId>test</RequestId></ResponseMetadata></PublishResponse>',
  };
};

/** An SNS error answer of the Query protocol. */
function snsError(status: number, type: 'Sender' | 'Receiver', code: string, message: string): Responder {
  return (): Reply => ({
    status,
    headers: { 'content-type': 'text/xml' },
    body:
      `<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>${type}</Type>` +
      `<Code>${code}</Code><Message>${message}</Message></Error><RequestId>test</RequestId></ErrorResponse>`,
  });
}

/** Answers like SNS having an internal error (HTTP 500, retryable). */
export const snsFailure = snsError(500, 'Receiver', 'InternalError', 'test outage');

/** Refuses a Publish like SNS refuses a message it cannot take, whatever it holds (HTTP 400, InvalidParameter). */
export const snsInvalidParameter = snsError(400, 'Sender', 'InvalidParameter', 'Invalid parameter: MessageAttributes');

/** The Publish calls among the recorded requests, parsed (each retry of the SDK is a call of its own). */
export function publishCalls(requests: RecordedRequest[]): PublishSeen[] {
  const calls: PublishSeen[] = [];
  for (const request of requests) {
    const form = new URLSearchParams(request.body);
    if (form.get('Action') !== 'Publish') continue;
    const attributes: Record<string, string> = {};
    for (const [name, value] of form) {
      const match = /^MessageAttributes\.entry\.(\d+)\.Name$/.exec(name);
      if (match) attributes[value] = form.get(`MessageAttributes.entry.${match[1]}.Value.StringValue`) ?? '';
    }
    calls.push({
      at: request.at,
      TopicArn: form.get('TopicArn') ?? '',
      Subject: form.get('Subject') ?? undefined,
      Message: form.get('Message') ?? '',
      MessageAttributes: attributes,
      MessageGroupId: form.get('MessageGroupId') ?? undefined,
      MessageDeduplicationId: form.get('MessageDeduplicationId') ?? undefined,
      acceptedAs: accepted.get(request),
    });
  }
  return calls;
}

// Optional tracing for the worker task: an AWS Distro for OpenTelemetry (ADOT) collector as a sidecar that receives
// the worker's OTLP/HTTP spans on localhost:4318 and exports them to AWS X-Ray. The worker container gets the standard
// OpenTelemetry variables (its SDK stays off without OTEL_EXPORTER_OTLP_ENDPOINT) and starts only once the collector
// reports healthy, so the first spans of a run are not sent into nothing.
import { Duration, Stack } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';

/** The public ADOT collector image (a setting: `tracingCollectorImage`); pin a version, never `latest`. */
export const DEFAULT_COLLECTOR_IMAGE = 'public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0';
export const COLLECTOR_CONTAINER_NAME = 'otel-collector';
/** Where the worker's OTLP/HTTP exporter sends spans: the sidecar, in the same task network namespace. */
const OTLP_HTTP_ENDPOINT = 'http://localhost:4318';
/** The service name spans carry (OTEL_SERVICE_NAME); the environment goes into OTEL_RESOURCE_ATTRIBUTES. */
const TRACING_SERVICE_NAME = 'bulk-import-worker';
/** The ADOT image's health probe; it asks the collector's health_check extension on localhost:13133. */
const COLLECTOR_HEALTHCHECK = ['CMD', '/healthcheck'];

/** What the collector does in X-Ray: the actions of the AWS-managed policy AWSXrayWriteOnlyAccess. */
export const XRAY_WRITE_ACTIONS = [
  'xray:PutTraceSegments',
  'xray:PutTelemetryRecords',
  'xray:GetSamplingRules',
  'xray:GetSamplingTargets',
  'xray:GetSamplingStatisticSummaries',
] as const;

/**
 * The collector's configuration (ADOT reads it from AOT_CONFIG_CONTENT): OTLP over HTTP in, batched, out to X-Ray.
 * The receiver listens on all interfaces of the task's network namespace because `localhost` may resolve to ::1 in one
 * container and 127.0.0.1 in the other; the task's security group admits no inbound traffic, so only the task's own
 * containers reach it.
 */
function collectorConfig(): string {
  return [
    'extensions:',
    '  health_check:',
    'receivers:',
    '  otlp:',
    '    protocols:',
    '      http:',
    '        endpoint: 0.0.0.0:4318',
    'processors:',
    '  batch/traces:',
    '    timeout: 1s',
    '    send_batch_size: 50',
    'exporters:',
    '  awsxray:',
    'service:',
    '  extensions: [health_check]',
    '  pipelines:',
    '    traces:',
    '      receivers: [otlp]',
    '      processors: [batch/traces]',
    '      exporters: [awsxray]',
    '',
  ].join('\n');
}

export interface TracingSidecarProps {
  /** The collector image reference (public ECR). */
  readonly image: string;
  readonly environmentName: string;
  /** The worker's log group; the collector writes its own streams there (prefix `<streamPrefix>/otel-collector/`). */
  readonly logGroup: logs.ILogGroup;
  readonly streamPrefix: string;
}

/**
 * Adds the collector to `taskDefinition`, points `worker` at it, makes the worker wait for it and lets the task role
 * write to X-Ray. The collector is not essential: if it dies the worker keeps importing and only the spans are lost.
 */
export function addTracingSidecar(
  taskDefinition: ecs.FargateTaskDefinition,
  worker: ecs.ContainerDefinition,
  props: TracingSidecarProps,
): ecs.ContainerDefinition {
  const collector = taskDefinition.addContainer(COLLECTOR_CONTAINER_NAME, {
    containerName: COLLECTOR_CONTAINER_NAME,
    image: ecs.ContainerImage.fromRegistry(props.image),
    essential: false,
    // Not read-only: the worker waits for this container to be healthy, and whether every ADOT release runs without
    // writing to its image is not something the worker's start should depend on. It runs as the image's non-root user.
    // The collector batches in memory; this keeps it from taking the worker's share of the task.
    memoryReservationMiB: 64,
    memoryLimitMiB: 256,
    environment: {
      AOT_CONFIG_CONTENT: collectorConfig(),
      AWS_REGION: Stack.of(taskDefinition).region,
    },
    healthCheck: {
      command: COLLECTOR_HEALTHCHECK,
      interval: Duration.seconds(10),
      timeout: Duration.seconds(5),
      retries: 3,
      startPeriod: Duration.seconds(10),
    },
    logging: ecs.LogDrivers.awsLogs({
      logGroup: props.logGroup,
      streamPrefix: props.streamPrefix,
      mode: ecs.AwsLogDriverMode.NON_BLOCKING,
    }),
  });
  worker.addEnvironment('OTEL_EXPORTER_OTLP_ENDPOINT', OTLP_HTTP_ENDPOINT);
  worker.addEnvironment('OTEL_SERVICE_NAME', TRACING_SERVICE_NAME);
  worker.addEnvironment('OTEL_RESOURCE_ATTRIBUTES', `deployment.environment=${props.environmentName}`);
  worker.addContainerDependencies({ container: collector, condition: ecs.ContainerDependencyCondition.HEALTHY });
  taskDefinition.taskRole.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'WriteTracesToXRay',
      actions: [...XRAY_WRITE_ACTIONS],
      // X-Ray's write and sampling actions have no resource-level permissions.
      resources: ['*'],
    }),
  );
  return collector;
}

// The network the worker and the admin API share: how a task reaches Postgres, how its HTTPS reaches AWS APIs
// (anywhere, or only the VPC endpoints when `vpcEndpoints` is on), and those endpoints.
import { Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';

/** Where Postgres is: its security group, or a CIDR; with neither, the VPC's CIDR when it is known. */
export interface DatabaseReach {
  readonly securityGroup: ec2.ISecurityGroup | undefined;
  readonly cidr: string | undefined;
  readonly port: number;
}

/** Lets `securityGroup` open connections to Postgres, as narrowly as the settings allow. */
export function allowPostgres(securityGroup: ec2.SecurityGroup, vpc: ec2.IVpc, reach: DatabaseReach): void {
  const description = 'Postgres (DATABASE_URL)';
  const port = ec2.Port.tcp(reach.port);
  if (reach.securityGroup) {
    securityGroup.connections.allowTo(reach.securityGroup, port, description);
    return;
  }
  const cidr = reach.cidr ?? tryVpcCidr(vpc);
  securityGroup.addEgressRule(cidr ? ec2.Peer.ipv4(cidr) : ec2.Peer.anyIpv4(), port, description);
}

/** The VPC's CIDR when it is known (created, looked up, or imported with vpcCidrBlock). */
export function tryVpcCidr(vpc: ec2.IVpc): string | undefined {
  try {
    return vpc.vpcCidrBlock;
  } catch {
    return undefined;
  }
}

/** How a task's HTTPS reaches AWS APIs: anywhere (through the NAT gateway), or only the VPC endpoints and S3. */
export type HttpsRoute =
  | { readonly kind: 'anywhere' }
  | { readonly kind: 'endpoints'; readonly endpoints: ec2.IConnectable; readonly s3PrefixListId: string };

/** Opens HTTPS from `securityGroup` as `route` says. */
export function allowHttps(securityGroup: ec2.SecurityGroup, route: HttpsRoute, description: string): void {
  if (route.kind === 'anywhere') {
    securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), description);
    return;
  }
  securityGroup.connections.allowTo(route.endpoints, ec2.Port.tcp(443), 'HTTPS to the VPC interface endpoints');
  securityGroup.addEgressRule(ec2.Peer.prefixList(route.s3PrefixListId), ec2.Port.tcp(443), 'HTTPS to S3 (gateway endpoint)');
}

/** The interface endpoints the worker and the admin API need: image pull, logs, secret, metrics, task protection. */
export const INTERFACE_ENDPOINTS = {
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
  Monitoring: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
  Ecs: ec2.InterfaceVpcEndpointAwsService.ECS,
  // Run notifications (SNS) and the tracing collector (X-Ray), when those are on, also leave only through endpoints.
  Sns: ec2.InterfaceVpcEndpointAwsService.SNS,
  XRay: ec2.InterfaceVpcEndpointAwsService.XRAY,
} as const;

/** One security group for every interface endpoint: HTTPS in from the tasks given to allowHttps, nothing else. */
export function createInterfaceEndpoints(scope: Construct, vpc: ec2.IVpc, subnets: ec2.SubnetSelection): ec2.SecurityGroup {
  const securityGroup = new ec2.SecurityGroup(scope, 'EndpointSecurityGroup', {
    vpc,
    description: 'VPC interface endpoints of the bulk-import worker: HTTPS from its tasks only',
    allowAllOutbound: false,
  });
  for (const [id, service] of Object.entries(INTERFACE_ENDPOINTS)) {
    new ec2.InterfaceVpcEndpoint(scope, `${id}Endpoint`, { vpc, service, subnets, securityGroups: [securityGroup], open: false, privateDnsEnabled: true });
  }
  return securityGroup;
}

/**
 * Limits the S3 gateway endpoint to the import bucket, deletes to the objects under the import prefix (the worker
 * deletes the object of a file that changed while it was sent: DiscardChangedImportObjects of the task role), and to
 * reading ECR's image layers (ECR keeps them in an S3 bucket of its own, fetched through this endpoint: without that
 * statement no task could pull its image).
 */
export function limitS3Endpoint(endpoint: ec2.GatewayVpcEndpoint, bucket: s3.IBucket, bucketPrefix: string): void {
  const stack = Stack.of(endpoint);
  endpoint.addToPolicy(
    new iam.PolicyStatement({
      sid: 'ImportBucketOnly',
      principals: [new iam.AnyPrincipal()],
      actions: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload', 's3:ListBucket'],
      resources: [bucket.bucketArn, bucket.arnForObjects('*')],
    }),
  );
  endpoint.addToPolicy(
    new iam.PolicyStatement({
      sid: 'DeleteImportObjects',
      principals: [new iam.AnyPrincipal()],
      actions: ['s3:DeleteObject'],
      resources: [bucket.arnForObjects(`${bucketPrefix}*`)],
    }),
  );
  endpoint.addToPolicy(
    new iam.PolicyStatement({
      sid: 'EcrImageLayers',
      principals: [new iam.AnyPrincipal()],
      actions: ['s3:GetObject'],
      resources: [`arn:${stack.partition}:s3:::prod-${stack.region}-starport-layer-bucket/*`],
    }),
  );
}

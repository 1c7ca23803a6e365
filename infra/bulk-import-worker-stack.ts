// The one stack: turns the normalised settings into references (existing resources imported by id, or left
// undefined so the construct creates them), instantiates the BulkImportWorker construct, and publishes the outputs
// operators and scripts use. No resource logic lives here.
import { CfnOutput, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as efs from 'aws-cdk-lib/aws-efs';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { BulkImportWorker, type ImportFileSystem } from './bulk-import-worker.js';
import type { ObservabilityProps } from './observability-props.js';
import type { WorkerStackSettings } from './settings.js';

export interface BulkImportWorkerStackProps extends StackProps {
  readonly settings: WorkerStackSettings;
}

export class BulkImportWorkerStack extends Stack {
  readonly worker: BulkImportWorker;

  constructor(scope: Construct, id: string, props: BulkImportWorkerStackProps) {
    super(scope, id, props);
    const settings = props.settings;

    const vpc = this.resolveVpc(settings);
    // readWorkerSettings guarantees an existing VPC whenever an existing cluster is named.
    const cluster =
      settings.clusterName && vpc
        ? ecs.Cluster.fromClusterAttributes(this, 'Cluster', { clusterName: settings.clusterName, vpc, securityGroups: [] })
        : undefined;

    this.worker = new BulkImportWorker(this, 'Worker', {
      environmentName: settings.environment,
      vpc,
      cluster,
      repository: ecr.Repository.fromRepositoryName(this, 'Repository', settings.ecrRepositoryName),
      imageTag: settings.imageTag,
      imageDigest: settings.imageDigest,
      workerCommand: settings.workerCommand,
      desiredCount: settings.desiredCount,
      importCampaign: settings.importCampaign,
      importFileSystem: this.resolveImportFileSystem(settings),
      databaseSecret: settings.databaseSecret.startsWith('arn:')
        ? secretsmanager.Secret.fromSecretCompleteArn(this, 'DatabaseSecret', settings.databaseSecret)
        : secretsmanager.Secret.fromSecretNameV2(this, 'DatabaseSecret', settings.databaseSecret),
      databaseSecretJsonField: settings.databaseSecretJsonField,
      databaseSecurityGroup: settings.databaseSecurityGroupId
        ? ec2.SecurityGroup.fromSecurityGroupId(this, 'DatabaseSecurityGroup', settings.databaseSecurityGroupId)
        : undefined,
      databasePort: settings.databasePort,
      databaseCidr: settings.databaseCidr,
      vpcEndpoints: settings.vpcEndpoints ? { s3PrefixListId: settings.s3PrefixListId! } : undefined,
      fargateSpot: settings.fargateSpot ? { onDemandBaseTasks: settings.onDemandBaseTasks } : undefined,
      workerSettings: settings.workerSettings,
      databaseSslMode: settings.databaseSslMode,
      databaseIamAuth: settings.databaseIamAuth,
      bucket: s3.Bucket.fromBucketName(this, 'ImportBucket', settings.bucketName),
      bucketPrefix: settings.bucketPrefix,
      bucketKmsKey: settings.bucketKmsKeyArn
        ? kms.Key.fromKeyArn(this, 'ImportBucketKey', settings.bucketKmsKeyArn)
        : undefined,
      alarmTopic: settings.alarmTopicArn ? sns.Topic.fromTopicArn(this, 'AlarmTopic', settings.alarmTopicArn) : undefined,
      alarmEmail: settings.alarmEmail,
      cpu: settings.cpu,
      memoryMiB: settings.memoryMiB,
      cpuArchitecture: settings.cpuArchitecture && ecs.CpuArchitecture.of(settings.cpuArchitecture),
      logLevel: settings.logLevel,
      logRetentionDays: settings.logRetentionDays as logs.RetentionDays | undefined,
      metricsNamespace: settings.metricsNamespace,
      workerConcurrency: settings.workerConcurrency,
      stopTimeoutSeconds: settings.stopTimeoutSeconds,
      shutdownGraceSeconds: settings.shutdownGraceSeconds,
      oldestQueuedAgeAlarmSeconds: settings.oldestQueuedAgeAlarmSeconds,
      ...observabilityProps(this, settings),
      autoscaling: settings.autoscaling && {
        minTasks: settings.autoscaling.minTasks,
        maxTasks: settings.autoscaling.maxTasks,
        scaleOutQueuedJobs: settings.autoscaling.scaleOutQueuedJobs,
        burstQueuedJobs: settings.autoscaling.burstQueuedJobs,
      },
      adminApi: settings.adminApi && {
        certificateArn: settings.adminApi.certificateArn,
        allowedSecurityGroups: settings.adminApi.allowedSecurityGroupIds.map((id) =>
          ec2.SecurityGroup.fromSecurityGroupId(this, `AdminApiCaller-${id}`, id),
        ),
        allowedCidrs: settings.adminApi.allowedCidrs,
        desiredCount: settings.adminApi.desiredCount,
      },
    });

    const worker = this.worker;
    output(this, 'ServiceName', worker.service.serviceName, 'ECS service of the worker (scripts/deploy.sh WORKER_SERVICE)');
    output(this, 'TaskFamily', worker.taskDefinition.family, 'Task definition family of the worker');
    output(this, 'ClusterName', worker.cluster.clusterName, 'ECS cluster of the worker service');
    output(this, 'LogGroupName', worker.logGroup.logGroupName, 'CloudWatch Logs group of the worker (aws logs tail …)');
    output(this, 'AlarmNames', worker.alarms.map((alarm) => alarm.alarmName).join(','), 'Alarms that page on-call, comma-separated');
    output(this, 'AlarmTopicArn', worker.alarmTopic.topicArn, 'SNS topic the alarms notify');
    if (worker.notifications) {
      output(this, 'NotificationsTopicArn', worker.notifications.topic.topicArn, 'SNS topic of run notifications (NOTIFICATIONS_TOPIC_ARN)');
    }
    output(this, 'ImportFileSystemId', worker.importFileSystem.fileSystemId, 'EFS file system of import campaigns');
    output(this, 'ImportAccessPointId', worker.importAccessPoint.accessPointId, 'EFS access point the worker mounts at /import');
    if (worker.adminApi) {
      output(this, 'AdminApiLoadBalancerDns', worker.adminApi.loadBalancer.loadBalancerDnsName, 'Internal DNS name of the admin API load balancer (point the certificate\'s name at it)');
      output(this, 'AdminApiServiceName', worker.adminApi.service.serviceName, 'ECS service of the admin API (bulk-import serve)');
    }
    output(this, 'ImportCampaign', settings.importCampaign ? 'on' : 'off', 'Whether /import is mounted in this deployment');
    // A deploy that changes nothing leaves the count as it is, and with autoscaling the service has none in the
    // template at all: scripts/campaign.sh reads this after its deploy and sets the service to it when they differ.
    output(this, 'DesiredCount', `${settings.desiredCount}`, 'Worker tasks this deployment asks for (scripts/campaign.sh sets the service to it)');
  }

  private resolveVpc(settings: WorkerStackSettings): ec2.IVpc | undefined {
    const vpc = settings.vpc;
    switch (vpc.kind) {
      case 'create':
        return undefined;
      case 'lookup':
        return ec2.Vpc.fromLookup(this, 'Vpc', { vpcId: vpc.vpcId });
      case 'import':
        // The task subnets are the VPC's private subnets; nothing here reads their route tables.
        Validations.of(this).acknowledge({
          id: '@aws-cdk/aws-ec2:noSubnetRouteTableId',
          reason: 'Imported private subnets only place task network interfaces; no route table is read or changed.',
        });
        return ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
          vpcId: vpc.vpcId,
          availabilityZones: vpc.availabilityZones,
          privateSubnetIds: vpc.privateSubnetIds,
          vpcCidrBlock: vpc.vpcCidrBlock,
        });
    }
  }

  private resolveImportFileSystem(settings: WorkerStackSettings): ImportFileSystem | undefined {
    const imported = settings.importFileSystem;
    if (imported.kind === 'create') return undefined;
    const fileSystem = efs.FileSystem.fromFileSystemAttributes(this, 'ImportFileSystem', {
      fileSystemId: imported.fileSystemId,
      securityGroup: ec2.SecurityGroup.fromSecurityGroupId(this, 'ImportFileSystemSecurityGroup', imported.securityGroupId),
    });
    return {
      fileSystem,
      accessPoint: imported.accessPointId
        ? efs.AccessPoint.fromAccessPointAttributes(this, 'ImportAccessPoint', {
            accessPointId: imported.accessPointId,
            fileSystem,
          })
        : undefined,
    };
  }
}

/** The observability settings as construct props: topics imported by ARN, the rest as they are. */
function observabilityProps(scope: Construct, settings: WorkerStackSettings): ObservabilityProps {
  const { noticeTopicArn, ...observability } = settings.observability;
  return {
    ...observability,
    noticeTopic: noticeTopicArn ? sns.Topic.fromTopicArn(scope, 'NoticeTopic', noticeTopicArn) : undefined,
  };
}

function output(scope: Construct, id: string, value: string, description: string): void {
  new CfnOutput(scope, id, { value, description });
}

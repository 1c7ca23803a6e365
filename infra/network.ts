// Security-group rules the worker and the admin API share: how a task reaches Postgres, and HTTPS to AWS APIs.
import * as ec2 from 'aws-cdk-lib/aws-ec2';

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

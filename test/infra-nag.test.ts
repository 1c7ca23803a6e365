// cdk-nag AwsSolutionsChecks over the synthesized worker app: no finding of any level is left unacknowledged, every
// acknowledgement is still needed (it matches a finding the rules really raise) and carries a reason a reviewer can
// check, and the checks do catch a violation when one is there.
import { Stack, Validations } from 'aws-cdk-lib';
import * as sns from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanUp, newApp, type ScenarioName, synthScenario } from './fixtures/infra/synth.js';

const SYNTH_TIMEOUT = 60_000;
afterAll(cleanUp);

/** The scenarios that, together, create every kind of resource the stack can create or reference. */
const SCENARIOS: ScenarioName[] = ['prodCampaign', 'prodExisting', 'prodAutoscaling'];

/**
 * Acknowledgements this project recorded on the construct tree (rule id, reason, construct path). CDK stores them
 * under the `Annotation::` namespace; aws-cdk-lib's own acknowledgements of its CloudFormation validator
 * (`CloudFormation-Validate::…`, e.g. on flow logs) are not ours and are left out.
 */
function acknowledgements(root: IConstruct): Array<{ id: string; reason: string; path: string }> {
  return root.node.findAll().flatMap((construct) =>
    construct.node.metadata
      .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((entry) => Object.entries(entry.data as Record<string, string>))
      .filter(([id]) => /^annotation::/i.test(id))
      .map(([id, reason]) => ({ id: id.replace(/^annotation::/i, ''), reason, path: construct.node.path })),
  );
}

/** The findings the rules raise when acknowledgements are ignored. */
function rawFindings(root: IConstruct): Array<{ rule: string; path: string }> {
  const checks = new AwsSolutionsChecks();
  // Look at what the rules raise before acknowledgements filter it; the pack's only hook for that is this method.
  (checks as unknown as { isAcknowledged: () => boolean }).isAcknowledged = () => false;
  return checks
    .validateScope(root)
    .violations.flatMap((violation) =>
      violation.violatingResources.map((resource) => ({ rule: violation.ruleName, path: resource.constructPath ?? '' })),
    );
}

describe('cdk-nag AwsSolutionsChecks', () => {
  for (const scenario of SCENARIOS) {
    it(`${scenario}: no unacknowledged finding, errors or warnings`, { timeout: SYNTH_TIMEOUT }, () => {
      const { app } = synthScenario(scenario);
      const report = new AwsSolutionsChecks().validateScope(app);
      expect(report.violations.map((violation) => `${violation.severity} ${violation.ruleName}`)).toEqual([]);
      expect(report.success).toBe(true);
    });

    it(`${scenario}: every acknowledgement matches a real finding and states a reason`, { timeout: SYNTH_TIMEOUT }, () => {
      const { app } = synthScenario(scenario);
      const nagAcknowledgements = acknowledgements(app).filter((ack) => ack.id.startsWith('AwsSolutions-'));
      const findings = rawFindings(app);
      for (const ack of nagAcknowledgements) {
        const covered = findings.filter((finding) => finding.rule === ack.id && finding.path.startsWith(`${ack.path}/`));
        expect(covered, `${ack.id} on ${ack.path} suppresses nothing`).not.toEqual([]);
        expect(ack.reason.length, `reason of ${ack.id}`).toBeGreaterThanOrEqual(80);
      }
      // Each raw finding is covered by an acknowledgement on the resource or one of its parents.
      for (const finding of findings) {
        const acknowledged = nagAcknowledgements.some(
          (ack) => ack.id === finding.rule && (finding.path === ack.path || finding.path.startsWith(`${ack.path}/`)),
        );
        expect(acknowledged, `${finding.rule} on ${finding.path}`).toBe(true);
      }
    });
  }

  it('acknowledges only the reviewed rules', { timeout: SYNTH_TIMEOUT }, () => {
    const ids = new Set(SCENARIOS.flatMap((scenario) => acknowledgements(synthScenario(scenario).app).map((ack) => ack.id)));
    const normalised = [...ids].map((id) => id.replace(/\[Resource::.*\]$/, '[Resource::…]')).sort();
    expect([...new Set(normalised)]).toEqual([
      '@aws-cdk/aws-ec2:noSubnetRouteTableId',
      'AwsSolutions-ECS2',
      'AwsSolutions-IAM5[Resource::…]',
    ]);
    // The wildcard-resource acknowledgements name their resources: the import prefix, `*` (no resource-level
    // permissions), this cluster's tasks and the revisions of the worker family (the scheduled tasks run its latest);
    // never a whole bucket or service.
    const resources = [...ids].filter((id) => id.startsWith('AwsSolutions-IAM5')).sort();
    expect(resources).toEqual(
      expect.arrayContaining([
        'AwsSolutions-IAM5[Resource::*]',
        'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::backend-documents/imports/*]',
        'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::backend-documents/documents/*]',
      ]),
    );
    for (const id of resources) {
      expect(id).toMatch(/Resource::(\*|.*\/imports\/\*|.*\/documents\/\*|.*:task\/.+\/\*|.*:task-definition\/bulk-import-worker-[a-z0-9-]+:\*)\]$/);
    }
  });

  it('catches a violation when one is present (the checks are live)', { timeout: SYNTH_TIMEOUT }, () => {
    const app = newApp({});
    const stack = new Stack(app, 'Probe');
    new sns.Topic(stack, 'PlainTopic');
    const rules = new AwsSolutionsChecks().validateScope(app).violations.map((violation) => violation.ruleName);
    expect(rules).toContain('AwsSolutions-SNS3');
  });
});

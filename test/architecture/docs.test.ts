// Docs that name code must match it: every source file is in ARCHITECTURE.md's table, every
// reject and re-issue reason in METRICS.md, every error code in PROTOCOL.md's table.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../shared/errors.js';
import { REASSIGN_REASONS, REJECT_REASONS } from '../../shared/reasons.js';
import { ROOT } from '../support/cli.js';
import { definedMetricNames } from '../support/metric-names.js';

const doc = (name: string): string => readFileSync(join(ROOT, 'docs', name), 'utf8');

/** Source files directly in `folder` (sub-folders are named as a whole in the table). */
function topLevelSources(folder: string): string[] {
  return readdirSync(join(ROOT, folder), { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => `${folder}/${e.name}`);
}

describe('docs that name code', () => {
  it('ARCHITECTURE.md names every source file of cli/, coordinator/, worker/ and shared/', () => {
    const table = doc('ARCHITECTURE.md').split('## The parts')[1]!.split('\n## ')[0]!;
    const files = ['cli', 'coordinator', 'worker', 'shared'].flatMap(topLevelSources);
    expect(files.length).toBeGreaterThan(40);
    expect(files.filter((f) => !table.includes(`\`${f}\``))).toEqual([]);
    expect(table).toContain('`bench/`');
  });

  it('METRICS.md lists every reject and re-issue reason', () => {
    const metrics = doc('METRICS.md');
    expect([...REJECT_REASONS, ...REASSIGN_REASONS].filter((r) => !metrics.includes(`\`${r}\``))).toEqual([]);
  });

  it('METRICS.md documents every batchlab metric the code defines', async () => {
    const metrics = doc('METRICS.md');
    const names = [...(await definedMetricNames())].filter((n) => n.startsWith('batchlab_'));
    const undocumented = names.filter(
      (n) => !metrics.includes(`\`${n}\``) && !/_(bucket|sum|count)$/.test(n) && !metrics.includes(`${n}\``),
    );
    expect(undocumented).toEqual([]);
  });

  it('stand alone: no file points to the team notes beside the checkout', () => {
    const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .filter((f) => /\.(md|ts|js|sh|py|ya?ml)$/.test(f) || f.endsWith('Dockerfile'));
    expect(tracked.length).toBeGreaterThan(100);
    const outside = /\b(DESIGN|LARGE_BATCH|STYLE|ECOSYSTEM-NOTES)\.md\b|\]\(\.\.\/shared\/|`\.\.\/shared\/[A-Z]/;
    const offenders = tracked.filter((f) => outside.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(offenders).toEqual([]);
  });

  it("PROTOCOL.md's error table has every error code", () => {
    const table = doc('PROTOCOL.md').split('## Error codes')[1]!.split('\n## ')[0]!;
    expect(ERROR_CODES.filter((code) => !table.includes(`\`${code}\``))).toEqual([]);
  });
});

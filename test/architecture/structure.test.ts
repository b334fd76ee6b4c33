// The structure the code promises to keep: a small coordinator centre (no function over 80
// lines in coordinator/) and no imports between cli/ and bench/ that form a cycle. Read from
// the source with the TypeScript parser, so a long function or a new import fails here first.

import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.js';

const MAX_FUNCTION_LINES = 80;

function sourceFiles(folder: string): string[] {
  return readdirSync(join(ROOT, folder), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(ROOT, folder, f));
}

/** Every function, method, arrow function and constructor in `file`, with its length in lines. */
function functionLengths(file: string): { name: string; lines: number }[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const found: { name: string; lines: number }[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      const name = node.name && ts.isIdentifier(node.name) ? node.name.text : `(anonymous at line ${start + 1})`;
      found.push({ name: `${relative(ROOT, file)}:${name}`, lines: end - start + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** Relative import specifiers of `file` that point into `folder`. */
function importsInto(file: string, folder: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specifiers.filter((s) => relative(ROOT, join(file, '..', s)).startsWith(`${folder}/`));
}

describe('code structure', () => {
  it(`keeps every function in coordinator/ under ${MAX_FUNCTION_LINES} lines`, () => {
    const lengths = sourceFiles('coordinator').flatMap(functionLengths);
    expect(lengths.length).toBeGreaterThan(50);
    const tooLong = lengths.filter((f) => f.lines >= MAX_FUNCTION_LINES);
    expect(tooLong).toEqual([]);
  });

  it('has no import from bench/ into cli/ and back that would form a cycle: bench/ imports nothing of cli/', () => {
    const benchToCli = sourceFiles('bench').flatMap((f) =>
      importsInto(f, 'cli').map((s) => `${relative(ROOT, f)} → ${s}`),
    );
    expect(sourceFiles('cli').some((f) => importsInto(f, 'bench').length > 0)).toBe(true);
    expect(benchToCli).toEqual([]);
  });
});

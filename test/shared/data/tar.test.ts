// The ustar reader: an archive written by the system's tar (long names included) reads back
// byte for byte; a corrupt header, a truncated archive and a path leaving the directory are refused.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readTar } from '../../../shared/data/tar.js';
import { tarHeader } from '../../support/cifar-files.js';

const root = mkdtempSync(join(tmpdir(), 'batchlab-tar-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const hasTar = (() => {
  try {
    execFileSync('tar', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const inCi = process.env.CI === 'true';

/** One file's archive: header, data, padding, end blocks. */
function archiveOf(path: string, data: Buffer): Buffer {
  return Buffer.concat([
    tarHeader(path, data.length, '0'),
    data,
    Buffer.alloc((512 - (data.length % 512)) % 512),
    Buffer.alloc(1024),
  ]);
}

describe('readTar', () => {
  const title = "reads back what the system's tar wrote, in GNU and pax formats, long names included";
  it.skipIf(!hasTar && !inCi)(hasTar || inCi ? title : `${title} (skipped: no tar program)`, () => {
    const src = join(root, 'src');
    const longDir = `dir-${'x'.repeat(120)}`;
    mkdirSync(join(src, 'top', longDir), { recursive: true });
    const files: Record<string, Buffer> = {
      'top/a.bin': Buffer.from(Array.from({ length: 3073 }, (_, i) => (i * 7) % 256)),
      'top/empty.txt': Buffer.alloc(0),
      [`top/${longDir}/b.txt`]: Buffer.from('long name\n'),
    };
    for (const [path, data] of Object.entries(files)) writeFileSync(join(src, path), data);
    // (Plain ustar cannot hold the 130-character directory name: the prefix field is how it splits short ones.)
    for (const format of ['gnu', 'pax']) {
      const tarFile = join(root, `${format}.tar`);
      execFileSync('tar', [`--format=${format}`, '-cf', tarFile, '-C', src, 'top']);
      const entries = readTar(readFileSync(tarFile), tarFile);
      const read = Object.fromEntries(
        entries.filter((e) => e.type === 'file').map((e) => [e.path, Buffer.from(e.data)]),
      );
      expect(read, format).toEqual(files);
      expect(
        entries
          .filter((e) => e.type === 'directory')
          .map((e) => e.path)
          .sort(),
        format,
      ).toEqual(['top', `top/${longDir}`]);
    }
  });

  it('reads the ustar header of the test archives, with its end blocks', () => {
    const data = Buffer.from('hello');
    const entries = readTar(archiveOf('d/hello.txt', data), 'x.tar');
    expect(entries.map((e) => ({ ...e, data: Buffer.from(e.data) }))).toEqual([
      { path: 'd/hello.txt', type: 'file', data },
    ]);
  });

  it('refuses a header whose checksum is wrong', () => {
    const bytes = archiveOf('d/hello.txt', Buffer.from('hello'));
    bytes[0] = 'e'.charCodeAt(0);
    expect(() => readTar(bytes, 'x.tar')).toThrow(
      /x\.tar: the header at byte 0 has checksum \d+, its bytes sum to \d+/,
    );
  });

  it('refuses an archive cut inside an entry or a header', () => {
    const bytes = archiveOf('d/big.bin', Buffer.alloc(2000, 1));
    expect(() => readTar(bytes.subarray(0, 1000), 'x.tar')).toThrow(
      'x.tar: truncated: an entry at byte 0 holds 2000 bytes but only 488 follow',
    );
    expect(() => readTar(bytes.subarray(0, 300), 'x.tar')).toThrow(
      'x.tar: truncated: it ends inside a header, at byte 300',
    );
  });

  it('refuses paths that are absolute or climb out of the directory', () => {
    for (const path of ['/etc/passwd', 'a/../../b', '..']) {
      expect(() => readTar(archiveOf(path, Buffer.from('x')), 'x.tar')).toThrow(
        `x.tar: refusing the entry ${JSON.stringify(path)}: its path leaves the directory unpacked into`,
      );
    }
  });
});

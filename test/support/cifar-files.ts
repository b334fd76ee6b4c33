// Test data in CIFAR's exact binary layout, with few records: the .bin files (label byte(s), then
// 1024 R, 1024 G, 1024 B bytes, each 32×32 row-major) written to a directory, or packed as the
// official .tar.gz archive is (ustar, everything under cifar-10-batches-bin/ or cifar-100-binary/).
// Seeded, with class structure a model can learn: each class has its own colour and a bright
// stripe (horizontal or vertical, at a class-dependent place), under per-pixel noise.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CIFAR, CIFAR_IMAGE_BYTES, CIFAR_SIDE, cifarRecordBytes, type CifarName } from '../../shared/data/cifar.js';
import { createRandom, type SeededRandom } from '../../shared/data/seeded-random.js';

/** What to generate. */
export interface CifarFileOptions {
  name: CifarName;
  /** Records in each training file (CIFAR-10 has five, CIFAR-100 one; default 20). */
  trainPerFile?: number;
  /** Records in the test file (default 20). */
  test?: number;
  /** Seed of the pixels and labels (default 1). */
  seed?: number;
}

/** Where {@link writeCifarFiles} wrote the dataset. */
export interface WrittenCifar {
  /** The directory holding the .bin files (the archive's subdirectory unless `flat`). */
  filesDir: string;
  /** Path of each .bin file, by file name. */
  files: Record<string, string>;
}

/** The archive's files (relative paths under its subdirectory) and their bytes, deterministically from `opts`. */
export function cifarFileContents(opts: CifarFileOptions): Map<string, Buffer> {
  const { name, trainPerFile = 20, test = 20, seed = 1 } = opts;
  const layout = CIFAR[name];
  const random = createRandom(seed);
  const contents = new Map<string, Buffer>();
  for (const file of layout.train) contents.set(file, records(name, trainPerFile, random));
  contents.set(layout.test, records(name, test, random));
  if (name === 'cifar10') contents.set('batches.meta.txt', Buffer.from(`${layout.classNames.join('\n')}\n\n`));
  else {
    contents.set('fine_label_names.txt', Buffer.from(`${layout.classNames.join('\n')}\n\n`));
    const coarse = Array.from({ length: 20 }, (_, k) => `superclass_${k}`);
    contents.set('coarse_label_names.txt', Buffer.from(`${coarse.join('\n')}\n\n`));
  }
  return contents;
}

/**
 * Writes the dataset's files to `dir` (created if needed): into `dir/<archive subdirectory>` as
 * the archive unpacks, or straight into `dir` with `flat`. `omit` leaves files out.
 */
export function writeCifarFiles(
  dir: string,
  opts: CifarFileOptions & { flat?: boolean; omit?: string[] },
): WrittenCifar {
  const filesDir = opts.flat ? dir : join(dir, CIFAR[opts.name].subdir);
  mkdirSync(filesDir, { recursive: true });
  const files: Record<string, string> = {};
  for (const [file, bytes] of cifarFileContents(opts)) {
    if (opts.omit?.includes(file)) continue;
    files[file] = join(filesDir, file);
    writeFileSync(files[file], bytes);
  }
  return { filesDir, files };
}

/** The dataset as its official archive is packed: a gzip'd ustar of `<subdir>/` and its files. */
export function makeCifarArchive(name: CifarName, opts: Omit<CifarFileOptions, 'name'> = {}): Buffer {
  const { subdir } = CIFAR[name];
  const blocks: Buffer[] = [tarHeader(`${subdir}/`, 0, '5')];
  for (const [file, bytes] of cifarFileContents({ ...opts, name })) {
    blocks.push(
      tarHeader(`${subdir}/${file}`, bytes.length, '0'),
      bytes,
      Buffer.alloc((512 - (bytes.length % 512)) % 512),
    );
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** A ustar header block for a regular file ('0') or a directory ('5'). */
export function tarHeader(path: string, size: number, type: '0' | '5'): Buffer {
  const header = Buffer.alloc(512);
  const octal = (value: number, width: number): string => `${value.toString(8).padStart(width - 1, '0')}\0`;
  header.write(path, 0, 100, 'utf8');
  header.write(octal(type === '5' ? 0o755 : 0o644, 8), 100);
  header.write(octal(1000, 8), 108);
  header.write(octal(1000, 8), 116);
  header.write(octal(size, 12), 124);
  header.write(octal(1_230_000_000, 12), 136);
  header.write('        ', 148);
  header.write(type, 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return header;
}

/** `count` records: label(s) then the planar image of a sample of that class. */
function records(name: CifarName, count: number, random: SeededRandom): Buffer {
  const layout = CIFAR[name];
  const out = Buffer.alloc(count * cifarRecordBytes(name));
  for (let i = 0; i < count; i++) {
    const start = i * cifarRecordBytes(name);
    const label = Math.floor(random.next() * layout.numClasses);
    if (layout.labelBytes === 2) out[start] = label % 20;
    out[start + layout.labelIndex] = label;
    out.set(image(label, random), start + layout.labelBytes);
  }
  return out;
}

/** A planar (R plane, G plane, B plane) 32×32 image of class `label`. */
function image(label: number, random: SeededRandom): Uint8Array {
  const plane = CIFAR_SIDE * CIFAR_SIDE;
  const pixels = new Uint8Array(CIFAR_IMAGE_BYTES);
  const colour = [(label * 73) % 200, (label * 151 + 40) % 200, (label * 37 + 90) % 200];
  const vertical = label % 2 === 1;
  const at = 4 + ((label * 7) % 24);
  for (let y = 0; y < CIFAR_SIDE; y++) {
    for (let x = 0; x < CIFAR_SIDE; x++) {
      const stripe = Math.abs((vertical ? x : y) - at) <= 1 ? 80 : 0;
      for (let c = 0; c < 3; c++) {
        const value = colour[c]! + stripe + (random.next() - 0.5) * 60;
        pixels[c * plane + y * CIFAR_SIDE + x] = Math.max(0, Math.min(255, Math.round(value)));
      }
    }
  }
  return pixels;
}

/**
 * The records of a CIFAR-10 file as HWC pixel / 255 and labels, decoded here from the planar bytes
 * (independently of the loader under test), to feed a saved model raw pixels.
 */
export function decodeTestFile(path: string): { pixels: Float32Array; labels: number[] } {
  const bytes = readFileSync(path);
  const count = bytes.length / 3073;
  const pixels = new Float32Array(count * 3072);
  const labels: number[] = [];
  for (let r = 0; r < count; r++) {
    labels.push(bytes[r * 3073]!);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 1024; p++) pixels[r * 3072 + p * 3 + c] = bytes[r * 3073 + 1 + c * 1024 + p]! / 255;
  }
  return { pixels, labels };
}

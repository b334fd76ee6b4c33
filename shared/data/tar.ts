// Reading a tar archive (POSIX ustar, with GNU long names and pax path records) held in memory:
// the regular files and directories it holds, each header's checksum verified. Links, devices
// and other entries are skipped; a path that is absolute or climbs out with `..` is refused, so
// unpacking stays inside the directory it is unpacked into.

const BLOCK = 512;

/** A regular file or directory of an archive. */
export interface TarEntry {
  /** Relative path inside the archive, `/`-separated, without a trailing slash. */
  path: string;
  type: 'file' | 'directory';
  /** The file's bytes (a view into the archive; empty for a directory). */
  data: Uint8Array;
}

/**
 * The files and directories of the tar archive `bytes`, in archive order.
 * @param archive the archive's name, for messages
 * @throws Error naming `archive` when a header's checksum is wrong, an entry runs past the end,
 *   or a path is absolute or contains `..`
 */
export function readTar(bytes: Uint8Array, archive: string): TarEntry[] {
  const entries: TarEntry[] = [];
  let longName: string | null = null;
  let offset = 0;
  while (offset + BLOCK <= bytes.length) {
    const header = bytes.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) return entries;
    checkChecksum(header, offset, archive);
    const size = readSize(header, offset, archive);
    const start = offset + BLOCK;
    if (start + size > bytes.length)
      throw new Error(
        `${archive}: truncated: an entry at byte ${offset} holds ${size} bytes but only ${bytes.length - start} follow`,
      );
    const data = bytes.subarray(start, start + size);
    offset = start + Math.ceil(size / BLOCK) * BLOCK;
    const type = String.fromCharCode(header[156]!);
    if (type === 'L') {
      longName = text(data, 0, data.length);
      continue;
    }
    if (type === 'x') {
      longName = paxPath(data) ?? longName;
      continue;
    }
    const path = checkPath(longName ?? headerName(header), archive);
    longName = null;
    if (type === '0' || type === '\0' || type === '7') entries.push({ path, type: 'file', data });
    else if (type === '5') entries.push({ path, type: 'directory', data: data.subarray(0, 0) });
  }
  if (offset < bytes.length || entries.length === 0)
    throw new Error(`${archive}: truncated: it ends inside a header, at byte ${bytes.length}`);
  // Ended without the two zero blocks: everything before was whole.
  return entries;
}

/** NUL-terminated ASCII/UTF-8 field. */
function text(bytes: Uint8Array, start: number, length: number): string {
  const field = bytes.subarray(start, start + length);
  const end = field.indexOf(0);
  return Buffer.from(end === -1 ? field : field.subarray(0, end)).toString('utf8');
}

function readOctal(header: Uint8Array, start: number, length: number): number {
  const field = text(header, start, length).trim();
  return field === '' ? 0 : parseInt(field, 8);
}

function readSize(header: Uint8Array, offset: number, archive: string): number {
  // GNU base-256 for sizes of 8 GiB and more: the first byte's high bit set.
  if (header[124]! & 0x80) {
    let size = header[124]! & 0x7f;
    for (let i = 125; i < 136; i++) size = size * 256 + header[i]!;
    return size;
  }
  const size = readOctal(header, 124, 12);
  if (!Number.isSafeInteger(size) || size < 0)
    throw new Error(`${archive}: the header at byte ${offset} has an unreadable size`);
  return size;
}

function checkChecksum(header: Uint8Array, offset: number, archive: string): void {
  const stored = readOctal(header, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed)
    throw new Error(
      `${archive}: the header at byte ${offset} has checksum ${stored}, its bytes sum to ${unsigned}: not a tar archive, or corrupt`,
    );
}

/** The ustar name, with its prefix field when the magic says ustar. */
function headerName(header: Uint8Array): string {
  const name = text(header, 0, 100);
  const ustar = text(header, 257, 6).startsWith('ustar');
  const prefix = ustar ? text(header, 345, 155) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/** The `path` of a pax extended header ("<length> path=<value>\n" records), if it has one. */
function paxPath(data: Uint8Array): string | null {
  const records = Buffer.from(data).toString('utf8');
  let path: string | null = null;
  let at = 0;
  while (at < records.length) {
    const space = records.indexOf(' ', at);
    const length = parseInt(records.slice(at, space), 10);
    if (space === -1 || !(length > 0)) break;
    const record = records.slice(space + 1, at + length - 1);
    if (record.startsWith('path=')) path = record.slice('path='.length);
    at += length;
  }
  return path;
}

/** The path without `./` and trailing slashes; refused when absolute or climbing out. */
function checkPath(raw: string, archive: string): string {
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (raw.startsWith('/') || parts.includes('..') || parts.length === 0)
    throw new Error(
      `${archive}: refusing the entry ${JSON.stringify(raw)}: its path leaves the directory unpacked into`,
    );
  return parts.join('/');
}

/** Reads an image file for `/photo`: an inline base64 attachment of a relay event. */
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** The largest photo the simulator sends: the server's default `MAX_ATTACHMENT_BYTES`. */
export const MAX_PHOTO_BYTES = 10 * 1024 * 1024;

const MIME_BY_EXTENSION: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
};

export interface Photo {
  name: string;
  mime: string;
  /** The file's bytes, base64. */
  data: string;
}

/** Reads `file` (`~/` is the home directory); throws an Error with a sentence for the person. */
export async function readPhoto(file: string): Promise<Photo> {
  const resolved = path.resolve(file.startsWith('~/') ? path.join(os.homedir(), file.slice(2)) : file);
  const mime = MIME_BY_EXTENSION[path.extname(resolved).toLowerCase()];
  if (!mime) throw new Error(`${file}: only .jpg, .jpeg, .png, .gif and .webp images can be sent`);
  const info = await stat(resolved).catch(() => null);
  if (!info) throw new Error(`${file}: no such file`);
  if (!info.isFile()) throw new Error(`${file}: not a file`);
  if (info.size > MAX_PHOTO_BYTES) {
    throw new Error(`${file}: ${(info.size / 1024 / 1024).toFixed(1)} MiB is over the 10 MiB limit for a photo`);
  }
  if (info.size === 0) throw new Error(`${file}: the file is empty`);
  const bytes = await readFile(resolved);
  return { name: path.basename(resolved), mime, data: bytes.toString('base64') };
}

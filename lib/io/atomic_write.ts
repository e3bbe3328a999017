import { basename, dirname, join } from "@std/path";

/** Options for {@link atomicWriteFile}. */
export interface AtomicWriteOptions {
  /** Permission bits of the new file (POSIX only), e.g. `0o600` for secrets. */
  mode?: number;
}

/**
 * Replaces a file atomically: writes a temp file in the same directory,
 * fsyncs it, renames it over the target and fsyncs the directory, so a crash
 * at any instant leaves either the old or the new content, never a torn file.
 *
 * @param path the file to write
 * @param data the complete new content (strings are written as UTF-8)
 * @param options permission bits for the new file
 * @returns a promise that resolves once the new content is durable
 *
 * @example
 * ```ts
 * await atomicWriteFile("data/registry.json", JSON.stringify({ clients: [] }));
 * ```
 */
export async function atomicWriteFile(
  path: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const dir = dirname(path);
  const temp = join(dir, `${tempPrefix(basename(path))}${randomSuffix()}`);
  const file = await Deno.open(temp, { write: true, createNew: true, mode: options.mode });
  let renamed = false;
  try {
    try {
      let written = 0;
      while (written < bytes.length) {
        written += await file.write(bytes.subarray(written));
      }
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
    renamed = true;
  } finally {
    if (!renamed) await Deno.remove(temp).catch(() => {});
  }
  await syncDirectory(dir);
}

/**
 * Deletes temp files that {@link atomicWriteFile} left behind for `name` in
 * `dir` when the process died mid-write.
 *
 * @param dir the directory holding the file
 * @param name the file's base name, e.g. `registry.json`
 * @returns how many leftover temp files were removed (0 if `dir` is missing)
 *
 * @example
 * ```ts
 * const removed = await removeStaleTempFiles("data", "registry.json");
 * ```
 */
export async function removeStaleTempFiles(dir: string, name: string): Promise<number> {
  const prefix = tempPrefix(name);
  let removed = 0;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.startsWith(prefix)) {
        await Deno.remove(join(dir, entry.name));
        removed++;
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return removed;
}

function tempPrefix(name: string): string {
  return `.${name}.tmp-`;
}

function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Makes the rename durable; platforms that cannot open or fsync a directory are skipped. */
async function syncDirectory(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(dir, { read: true });
  } catch (error) {
    if (isDirectorySyncUnsupported(error)) return;
    throw error;
  }
  try {
    await handle.sync();
  } catch (error) {
    if (!isDirectorySyncUnsupported(error)) throw error;
  } finally {
    handle.close();
  }
}

function isDirectorySyncUnsupported(error: unknown): boolean {
  if (error instanceof Deno.errors.NotSupported || error instanceof Deno.errors.IsADirectory) {
    return true;
  }
  const code = (error as { code?: unknown } | null)?.code;
  return code === "EINVAL" || code === "EISDIR" || code === "ENOTSUP";
}

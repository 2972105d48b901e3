import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";

// PGlite keeps the whole database inside this process: two processes that open the same data
// folder would each run their own Postgres on the same files and silently diverge. A lock file
// created with O_EXCL and holding the owner's pid makes the second process stop with a clear
// message instead. A lock left behind by a process that died (its pid is gone) is taken over.

export const LOCK_FILE_NAME = "tenantd.lock";

export interface DataDirLock {
  readonly path: string;
  /** Removes the lock file if it still names this process. Safe to call twice. */
  release(): void;
}

function pidAlive(pid: number): boolean {
  try {
    // Signal 0 checks for existence without delivering anything.
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to another user, so it is alive.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readPid(path: string): number | null {
  try {
    const n = Number.parseInt(readFileSync(path, "utf8").trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function tryCreate(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

/**
 * Takes the lock of a data folder (creating the folder if needed), or throws when a live process
 * holds it. The current process counts as live too, so one process cannot open a folder twice.
 */
export function acquireDataDirLock(dataDir: string): DataDirLock {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE_NAME);
  // Two attempts: the first may find a stale lock, which is removed before the second.
  for (let attempt = 0; attempt < 2; attempt++) {
    if (tryCreate(path)) {
      let released = false;
      return {
        path,
        release() {
          if (released) return;
          released = true;
          // Only remove the file while it still names us; never delete another process's lock.
          if (readPid(path) === process.pid) unlinkSync(path);
        },
      };
    }
    const pid = readPid(path);
    if (pid !== null && pidAlive(pid)) {
      throw new Error(
        `data folder ${dir} is in use by process ${pid} (lock file ${path}); stop that process, or delete the lock file if it is not tenantd`,
      );
    }
    // Stale: re-read just before removing so that a lock another process took over in the
    // meantime is left alone (a narrow race remains between this read and the unlink; the
    // O_EXCL create that follows still lets only one process win).
    if (readPid(path) === pid) {
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
  }
  throw new Error(`data folder ${dir} is locked by another process starting at the same time (lock file ${path})`);
}

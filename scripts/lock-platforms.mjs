// Completes package-lock.json with the platform-specific optional packages of @biomejs/biome and
// @bufbuild/buf that the registry reachable here does not serve (only the linux-x64 and
// linux-arm64 builds are mirrored). npm leaves them out of the lock file when it cannot resolve
// them, and `npm ci` then refuses the lock file as out of sync. Each entry records only the
// version and the os/cpu/libc it is for, so npm skips it on every other platform without fetching
// anything. Run after any `npm install` that rewrites the lock file: `node scripts/lock-platforms.mjs`.
import { readFileSync, writeFileSync } from "node:fs";

const lockPath = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(lockPath, "utf8"));
const packages = lock.packages;

function platformOf(suffix) {
  const [os, cpuRaw, libc] = suffix.split("-");
  const cpu = cpuRaw === "armv7" ? "arm" : cpuRaw;
  return { os: [os], cpu: [cpu], ...(libc === "musl" ? { libc: ["musl"] } : {}) };
}

let added = 0;
for (const [path, entry] of Object.entries(packages)) {
  if (!path.startsWith("node_modules/") || !entry.optionalDependencies) continue;
  for (const [name, version] of Object.entries(entry.optionalDependencies)) {
    const key = `node_modules/${name}`;
    if (packages[key]) continue;
    const m = /^@(biomejs\/cli|bufbuild\/buf)-(.+)$/.exec(name);
    if (!m) continue;
    packages[key] = {
      version,
      ...(entry.dev ? { dev: true } : {}),
      optional: true,
      ...platformOf(m[2]),
    };
    added++;
  }
}
const sorted = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)),
);
lock.packages = sorted;
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platforms: added ${added} platform entries`);

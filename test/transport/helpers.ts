import { execFile } from "node:child_process";
import * as path from "node:path";
import { createLogger, type Logger } from "../../src/transport/logging.js";

/** A logger whose lines the test can read back, parsed. */
export function captureLog(level: "debug" | "info" | "warn" = "info"): {
  log: Logger;
  lines: () => Record<string, unknown>[];
} {
  const raw: string[] = [];
  const log = createLogger(level, { write: (line: string) => raw.push(line) });
  return { log, lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** RPC log lines only (not "listening", "server closed", …). */
export function rpcLines(lines: Record<string, unknown>[]): Record<string, unknown>[] {
  return lines.filter((l) => l.msg === "rpc");
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits until `cond` holds, polling; for conditions that follow asynchronous I/O. */
export async function eventually(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await sleep(10);
  }
}

const BUF = path.resolve(import.meta.dirname, "../../node_modules/.bin/buf");

/** Runs the real `buf` CLI (the gRPC tool available here, like grpcurl elsewhere). */
export function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(BUF, ["curl", ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

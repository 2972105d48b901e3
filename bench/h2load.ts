// Load generation with h2load (nghttp2-client) against tenantd running as a child process, so the
// load generator, the checks and the server never share an event loop. Used by bench/run.ts.
//
// h2load counts HTTP statuses only: a gRPC error is HTTP 200 with a grpc-status trailer, a Connect
// or REST error has its own HTTP status but h2load does not read bodies. So besides requiring every
// h2load response to be 2xx, the runner samples responses itself (same path, headers and body
// file as h2load) before, during and after each load and fails on any error it sees.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const UNLIMITED = { capacity: 1e9, refillPerSec: 1e9 };
const BENCH_PLANS = JSON.stringify({
  plans: { free: { key: UNLIMITED, tenant: UNLIMITED } },
  owner: UNLIMITED,
});

import pg from "pg";

export const H2LOAD_INSTALL_HINT =
  "h2load not found on PATH: the h2load cases (REST vs Connect JSON vs gRPC) are skipped. " +
  "Install it with `sudo apt-get install nghttp2-client` (Debian/Ubuntu), `brew install nghttp2` (macOS) " +
  "or `dnf install nghttp2` (Fedora), then run `npm run bench` again.";

/** The h2load version line, or undefined when it is not installed. */
export function h2loadVersion(): string | undefined {
  const r = spawnSync("h2load", ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return undefined;
  return r.stdout.trim().split("\n")[0];
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ChildServer {
  baseUrl: string;
  port: number;
  ownerKey: string;
  /** "postgres" or "pglite", plus "+redis" when REDIS_URL is set. */
  backend: string;
  stop(): Promise<void>;
}

/**
 * Starts `node --import tsx src/main.ts` on a free port with its own store (a fresh Postgres
 * database when DATABASE_URL is set, dropped on stop; a temporary PGlite folder otherwise), the
 * bootstrap owner key written to a temporary file, and LOG_LEVEL=warn. Resolves once /readyz
 * answers 200.
 */
export async function startChildServer(root: string): Promise<ChildServer> {
  const dir = mkdtempSync(join(tmpdir(), "tenantd-bench-"));
  const keyFile = join(dir, "owner-key");
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: "127.0.0.1",
    TENANTD_OWNER_KEY_FILE: keyFile,
    LOG_LEVEL: "warn",
    // The transport comparisons measure the protocol path, not the plan's budget: the bench
    // tenant gets buckets it cannot exhaust (the limiter still decides every call).
    TENANTD_RATE_LIMIT_PLANS: process.env.TENANTD_RATE_LIMIT_PLANS ?? BENCH_PLANS,
  };
  const serverUrl = process.env.DATABASE_URL || undefined;
  let dropDatabase: (() => Promise<void>) | undefined;
  if (serverUrl) {
    const name = `tenantd_bench_${randomBytes(6).toString("hex")}`;
    const admin = async (sql: string) => {
      const c = new pg.Client({ connectionString: serverUrl });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    await admin(`create database "${name}"`);
    dropDatabase = () => admin(`drop database if exists "${name}" with (force)`);
    const u = new URL(serverUrl);
    u.pathname = `/${name}`;
    env.DATABASE_URL = u.toString();
    delete env.TENANTD_DATA_DIR;
  } else {
    delete env.DATABASE_URL;
    env.TENANTD_DATA_DIR = join(dir, "data");
  }

  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Kept for the error message if the child dies or misbehaves; warn level keeps it short.
  let output = "";
  const keep = (b: Buffer) => {
    output = (output + b.toString("utf8")).slice(-8000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let dead = false;
  void exited.then(() => {
    dead = true;
  });

  const cleanup = async () => {
    if (!dead) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase?.();
  };

  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (dead) {
      await cleanup();
      throw new Error(`tenantd child exited during start-up:\n${output}`);
    }
    const ok = await fetch(`${baseUrl}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await cleanup();
      throw new Error(`tenantd child not ready after 120 s:\n${output}`);
    }
    await sleep(200);
  }
  const ownerKey = readFileSync(keyFile, "utf8").trim();
  return {
    baseUrl,
    port,
    ownerKey,
    backend: `${serverUrl ? "postgres" : "pglite"}${process.env.REDIS_URL ? "+redis" : ""}`,
    stop: cleanup,
  };
}

export interface LoadTarget {
  name: string;
  path: string;
  /** h2load `-H` values. */
  headers: string[];
  /** Request body file (h2load `-d`, which makes the request a POST); none for a GET. */
  bodyFile?: string;
  /** Throws unless the answer to one request like h2load's is a success. */
  check(): Promise<void>;
}

export interface LoadResult {
  rps: number;
  /** From the per-request log when h2load wrote one, else h2load's mean. */
  p50_us: number;
  p99_us: number;
  requests: number;
  /** Responses the runner checked itself (before, during, after). */
  sampled: number;
}

export interface LoadOptions {
  /** Fixed request count (`-n`); when unset, a timed run of `durationS` (`-D`). */
  requests?: number;
  durationS: number;
  /** Unmeasured warm-up of a timed run (`--warm-up-time`): JIT, key cache, pools. */
  warmUpS: number;
  clients: number;
  streams: number;
  /** Requests sampled by the runner while h2load runs. */
  samplesDuring: number;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

function runProcess(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (b: Buffer) => {
      stdout += b.toString("utf8");
    });
    p.stderr.on("data", (b: Buffer) => {
      stderr += b.toString("utf8");
    });
    p.once("error", reject);
    p.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** h2load's duration unit (`us`, `ms`, `s`) to microseconds. */
function toMicros(value: string, unit: string): number {
  const n = Number(value);
  return unit === "s" ? n * 1e6 : unit === "ms" ? n * 1e3 : n;
}

/** Parses the parts of h2load's report the bench uses; throws on a report it does not recognise. */
export function parseH2loadReport(text: string): {
  rps: number;
  total: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  /** Status counts include a timed run's warm-up requests, so 2xx may exceed `total`. */
  status2xx: number;
  statusOther: number;
  meanUs: number;
} {
  const finished = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(text);
  const requests =
    /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      text,
    );
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(text);
  const timing = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(text);
  if (!finished || !requests || !codes || !timing) throw new Error(`unrecognised h2load output:\n${text}`);
  return {
    rps: Number(finished[1]),
    total: Number(requests[1]),
    succeeded: Number(requests[2]),
    failed: Number(requests[3]),
    errored: Number(requests[4]),
    timeout: Number(requests[5]),
    status2xx: Number(codes[1]),
    statusOther: Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
    meanUs: toMicros(timing[5] as string, timing[6] as string),
  };
}

/** Runs h2load once over h2c (prior knowledge) and checks every response was a 2xx. */
export async function h2load(baseUrl: string, t: LoadTarget, o: LoadOptions): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), "tenantd-h2load-"));
  const logFile = join(dir, "requests.log");
  try {
    const args = [
      ...(o.requests !== undefined
        ? ["-n", String(o.requests)]
        : ["-D", String(o.durationS), `--warm-up-time=${o.warmUpS}`]),
      "-c",
      String(o.clients),
      "-m",
      String(o.streams),
      `--log-file=${logFile}`,
    ];
    for (const h of t.headers) args.push("-H", h);
    if (t.bodyFile) args.push("-d", t.bodyFile);
    args.push(baseUrl + t.path);

    // Sampled while the load runs: an error that only shows under load (a limiter, a pool running
    // dry) fails the bench even though h2load itself saw 2xx statuses.
    const load = runProcess("h2load", args);
    let sampled = 0;
    let loadDone = false;
    void load.then(() => {
      loadDone = true;
    });
    const sampling = (async () => {
      for (let i = 0; i < o.samplesDuring && !loadDone; i++) {
        await t.check();
        sampled++;
        await sleep(20);
      }
    })();
    const [res] = await Promise.all([load, sampling]);
    if (res.code !== 0) throw new Error(`h2load exited with ${res.code}:\n${res.stderr}\n${res.stdout}`);
    const r = parseH2loadReport(res.stdout);
    const expected = o.requests ?? r.total;
    // A timed run's status counters cover another window than `total` (warm-up included, the
    // last in-flight requests not), so only a counted run can compare the 2xx count exactly.
    const countsAgree = o.requests === undefined || r.status2xx === expected;
    if (
      expected === 0 ||
      r.total !== expected ||
      r.succeeded !== expected ||
      !countsAgree ||
      r.statusOther > 0 ||
      r.failed + r.errored + r.timeout > 0
    ) {
      throw new Error(
        `${t.name}: h2load saw ${r.status2xx} 2xx and ${r.statusOther} other statuses for ${expected} requests (failed ${r.failed}, errored ${r.errored}, timeout ${r.timeout}):\n${res.stdout}`,
      );
    }
    let p50 = r.meanUs;
    let p99 = r.meanUs;
    let durations: number[] = [];
    let lines: string[][] = [];
    try {
      lines = readFileSync(logFile, "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => l.split("\t"));
    } catch {
      // Older h2load builds have no --log-file; the mean stands in for the percentiles then.
    }
    if (lines.length > 0) {
      // Per-request statuses. In a timed run, h2load 1.52 logs the requests that were in flight
      // when the warm-up ended with status 0 (its summary counts no failure for them), so at
      // most clients × streams of them are tolerated, and left out of the latencies since only
      // part of their time was measured.
      const other = lines.filter((l) => l[1] !== "200" && l[1] !== "0");
      const zero = lines.filter((l) => l[1] === "0").length;
      const inFlight = o.requests === undefined ? o.clients * o.streams : 0;
      if (other.length > 0 || zero > inFlight) {
        throw new Error(`${t.name}: per-request log has ${other.length} non-200 statuses and ${zero} without status`);
      }
      durations = lines
        .filter((l) => l[1] === "200")
        .map((l) => Number(l[2]))
        .filter((n) => Number.isFinite(n));
    }
    if (durations.length > 0) {
      durations.sort((a, b) => a - b);
      p50 = quantile(durations, 0.5);
      p99 = quantile(durations, 0.99);
    }
    // After the load too: the server must still answer correctly.
    await t.check();
    sampled++;
    return { rps: r.rps, p50_us: p50, p99_us: p99, requests: r.total, sampled };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes `content` to a new temporary file and returns its path (h2load's `-d`). */
export function tempBodyFile(name: string, content: Uint8Array | string): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "tenantd-body-"));
  const path = join(dir, name);
  writeFileSync(path, content);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * One gRPC call over h2c with exactly the bytes h2load sends; returns the grpc-status (from the
 * trailers, or from the headers of a trailers-only answer) and the response body.
 */
export function grpcOnce(
  baseUrl: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<{ httpStatus: number; grpcStatus: string | undefined; grpcMessage: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.once("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, ...headers });
    let httpStatus = 0;
    let grpcStatus: string | undefined;
    let grpcMessage: string | undefined;
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      httpStatus = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) grpcStatus = String(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) grpcMessage = String(h["grpc-message"]);
    });
    req.on("trailers", (t) => {
      if (t["grpc-status"] !== undefined) grpcStatus = String(t["grpc-status"]);
      if (t["grpc-message"] !== undefined) grpcMessage = String(t["grpc-message"]);
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.once("error", (e) => {
      session.close();
      reject(e);
    });
    req.once("end", () => {
      session.close();
      resolve({ httpStatus, grpcStatus, grpcMessage, body: Buffer.concat(chunks) });
    });
    req.end(body);
  });
}

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
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

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

/** One row of the bench table and of `bench/results/latest.json`. */
export interface BenchRow {
  case: string;
  rps: number;
  p50_us: number;
  p99_us: number;
  ratio: number | null;
  baseline: string | null;
  redis_ops_per_call: number | null;
}

/** One measured run of a case (see run.ts, `measure`). */
export interface Measured {
  rps: number;
  p50_us: number;
  p99_us: number;
  /** Every request the server answered during the run (warm-up and samples included). */
  responses: number;
  /** Redis script calls during the run, when Redis is in use. */
  redisCalls: number | null;
}

/** A case of run.ts's `rounds`: measured each round, turned into a row (and `also` a second one). */
export interface RoundCase {
  name: string;
  baseline?: string;
  /** A second row of the same runs (same rps and latencies), with its ratio over another case. */
  also?: { name: string; baseline: string };
  countRedis: boolean;
  run: () => Promise<Measured>;
  /**
   * A separate run whose request count is exact, for redis_ops_per_call, when `run` cannot
   * count every request it causes (a timed h2load run does not count its warm-up).
   */
  redisRun?: () => Promise<Measured>;
}

export interface ChildServer {
  baseUrl: string;
  port: number;
  ownerKey: string;
  /** "postgres" or "pglite", plus "+redis" when REDIS_URL is set. */
  backend: string;
  stop(): Promise<void>;
}

/**
 * The Node flags `npm start` runs tenantd with (package.json, the Dockerfile): a 32 MiB
 * semi-space for the young generation. The bare grpc-js server runs with them too, so that the
 * comparison is between the servers, not between their Node settings.
 */
export const SERVER_NODE_FLAGS = ["--max-semi-space-size=32"];

/**
 * Starts `node <SERVER_NODE_FLAGS> --import tsx src/main.ts` on a free port with its own store
 * (a fresh Postgres database when DATABASE_URL is set, dropped on stop; a temporary PGlite folder
 * otherwise), the bootstrap owner key written to a temporary file, and LOG_LEVEL=warn. Resolves
 * once /readyz answers 200.
 */
export async function startChildServer(
  root: string,
  opts: { entry?: string; env?: Record<string, string> } = {},
): Promise<ChildServer> {
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
    ...opts.env,
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

  // BENCH_NODE_ARGS: extra Node flags for the child, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`.
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
  const child: ChildProcess = spawn(
    process.execPath,
    [...SERVER_NODE_FLAGS, ...nodeArgs, "--import", "tsx", opts.entry ?? "src/main.ts"],
    {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
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
  /**
   * Requests h2load completed plus the runner's samples: every request of a counted (`-n`) run,
   * the divisor of per-call counters read around it (Redis commands). A timed run's count leaves
   * out its warm-up requests, so it undercounts what the server answered.
   */
  responses: number;
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
    return {
      rps: r.rps,
      p50_us: p50,
      p99_us: p99,
      requests: r.total,
      responses: Math.max(r.status2xx, r.total) + sampled,
      sampled,
    };
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

/** A bare gRPC server in a child process (see startEchoChild). */
export interface EchoChild {
  baseUrl: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts `startGrpcJsEcho(port)` of bench/grpc-echo.ts (a bare @grpc/grpc-js server answering
 * grpc.health.v1.Health/Check) in a child process, like tenantd, so that neither server shares
 * an event loop with the load generator or the runner. Resolves once the child says it listens.
 */
export async function startEchoChild(root: string): Promise<EchoChild> {
  const port = await freePort();
  // BENCH_GRPC_ECHO: another module with the same export, to compare another bare server.
  const module = pathToFileURL(process.env.BENCH_GRPC_ECHO || join(root, "bench", "grpc-echo.ts")).href;
  const script = [
    `const { startGrpcJsEcho } = await import(${JSON.stringify(module)});`,
    `const server = await startGrpcJsEcho(${port});`,
    `const stop = () => server.close().then(() => process.exit(0), () => process.exit(1));`,
    `process.once("SIGTERM", stop);`,
    `process.once("SIGINT", stop);`,
    `process.stdout.write("listening\\n");`,
  ].join("\n");
  const child = spawn(
    process.execPath,
    [...SERVER_NODE_FLAGS, "--import", "tsx", "--input-type=module", "-e", script],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  const stop = async () => {
    if (dead) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`grpc-js echo child not listening after 60 s:\n${output}`)),
      60_000,
    );
    const onData = (b: Buffer) => {
      output = (output + b.toString("utf8")).slice(-8000);
      if (output.includes("listening\n")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (b: Buffer) => {
      output = (output + b.toString("utf8")).slice(-8000);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`grpc-js echo child exited with ${code}:\n${output}`));
    });
  }).catch(async (err) => {
    await stop();
    throw err;
  });
  return { baseUrl: `http://127.0.0.1:${port}`, port, stop };
}

// ---------------------------------------------------------------------------------------------
// h2gen: a small gRPC load generator over node:http2, for what h2load cannot do: a different
// request body on every request (h2load sends one `-d` file). It keeps `connections` h2c
// sessions with `streams` requests in flight on each, cycles through `bodies`, and checks EVERY
// response (HTTP 200 and grpc-status 0, from the trailers or a trailers-only answer), decoding
// every `checkEvery`-th message with `checkMessage`. Its own cost is higher than h2load's, so
// its figures are compared only with other figures of the same generator.

export interface GrpcLoadOptions {
  baseUrl: string;
  /** `/package.Service/Method`. */
  path: string;
  /** Request headers besides :method and :path (content-type, te, authorization). */
  headers: Record<string, string>;
  /** Framed request messages (5-byte prefix + message), sent in turn. */
  bodies: Uint8Array[];
  connections: number;
  /** Concurrent requests per connection. */
  streams: number;
  /** Measured seconds, after `warmUpS` unmeasured ones. */
  durationS: number;
  warmUpS: number;
  /** Throws unless the response message (unframed) answers the request `bodies[index]`. */
  checkMessage(message: Buffer, index: number): void;
  /** Decode and check every n-th response (default 97); every response's status is checked. */
  checkEvery?: number;
}

export interface GrpcLoadResult {
  rps: number;
  p50_us: number;
  p99_us: number;
  /** Responses completed in the measured window. */
  requests: number;
  /** Every response, warm-up included: the divisor of per-call counters read around the run. */
  responses: number;
  /** Messages decoded and checked. */
  decoded: number;
  /** Distinct request bodies sent. */
  distinctBodies: number;
}

function connectH2(baseUrl: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(baseUrl);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

/** Runs the generator once; rejects on the first failed, erroring or non-OK response. */
export async function grpcLoad(o: GrpcLoadOptions): Promise<GrpcLoadResult> {
  const sessions = await Promise.all(Array.from({ length: o.connections }, () => connectH2(o.baseUrl)));
  const checkEvery = o.checkEvery ?? 97;
  let phase: "warm-up" | "measure" | "stop" = o.warmUpS > 0 ? "warm-up" : "measure";
  let failure: Error | undefined;
  let next = 0;
  let responses = 0;
  let measured = 0;
  let decoded = 0;
  let inFlight = 0;
  let measureStart = phase === "measure" ? performance.now() : 0;
  let measureEnd = 0;
  const latencies: number[] = [];
  let settle: () => void = () => {};
  const settled = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const fail = (err: Error) => {
    failure ??= err;
  };

  const issue = (session: http2.ClientHttp2Session) => {
    if (phase === "stop" || failure !== undefined) {
      if (inFlight === 0) settle();
      return;
    }
    const index = next++ % o.bodies.length;
    const decode = next % checkEvery === 0;
    const startedIn = phase;
    const t0 = performance.now();
    inFlight++;
    const req = session.request({ ":method": "POST", ":path": o.path, ...o.headers });
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
    req.on("data", (c: Buffer) => {
      if (decode) chunks.push(c);
    });
    let finished = false;
    req.once("error", (e) => {
      if (finished) return;
      finished = true;
      inFlight--;
      fail(new Error(`${o.path}: stream error: ${e.message}`));
      issue(session);
    });
    req.once("end", () => {
      if (finished) return;
      finished = true;
      inFlight--;
      const done = performance.now();
      responses++;
      if (httpStatus !== 200 || grpcStatus !== "0") {
        fail(
          new Error(
            `${o.path}: request ${index} answered HTTP ${httpStatus} grpc-status ${grpcStatus ?? "(none)"} ${decodeURIComponent(grpcMessage ?? "")}`,
          ),
        );
      } else if (decode) {
        try {
          const body = Buffer.concat(chunks);
          if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) {
            throw new Error(`not one uncompressed message frame (${body.length} bytes)`);
          }
          o.checkMessage(body.subarray(5), index);
          decoded++;
        } catch (e) {
          fail(new Error(`${o.path}: response to request ${index}: ${e instanceof Error ? e.message : String(e)}`));
        }
      }
      if (phase === "measure") {
        measured++;
        if (startedIn === "measure") latencies.push((done - t0) * 1000);
      }
      issue(session);
    });
    req.end(o.bodies[index]);
  };

  const warmUp = setTimeout(() => {
    phase = "measure";
    measureStart = performance.now();
  }, o.warmUpS * 1000);
  const stop = setTimeout(
    () => {
      phase = "stop";
      measureEnd = performance.now();
    },
    (o.warmUpS + o.durationS) * 1000,
  );
  for (const s of sessions) for (let i = 0; i < o.streams; i++) issue(s);
  await settled;
  clearTimeout(warmUp);
  clearTimeout(stop);
  for (const s of sessions) s.close();
  if (failure) throw failure;
  latencies.sort((a, b) => a - b);
  return {
    rps: measured / ((measureEnd - measureStart) / 1000),
    p50_us: quantile(latencies, 0.5),
    p99_us: quantile(latencies, 0.99),
    requests: measured,
    responses,
    decoded,
    distinctBodies: Math.min(next, o.bodies.length),
  };
}

/** A gRPC message frame: flag 0 (uncompressed), 4-byte big-endian length, the message. */
export function grpcFrame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

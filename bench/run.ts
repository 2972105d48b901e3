// `npm run bench`: end-to-end benchmarks of tenantd's RPCs, measured through a real server and
// real gRPC clients, on the backends the environment selects (Postgres + Redis when DATABASE_URL
// and REDIS_URL are set; PGlite otherwise). Prints a table and writes bench/results/latest.json as
// a list of { case, rps, p50_us, p99_us, ratio, baseline, redis_ops_per_call }.
//
// Cases, in process (a real server and gRPC clients in this process, serial calls):
//   create-tenant   CreateTenant, serial, with BENCH_TENANTS (default 1000) tenants present
//   delete-tenant   DeleteTenant, serial
//   get-tenant      GetTenant, serial: the trivial authenticated RPC, baseline for the others
//   verify-key      KeyService.VerifyKey of a cached key, serial; ratio against get-tenant
// Cases under h2load (bench/h2load.ts: tenantd as a child process, so the load generator and the
// server do not share an event loop; the same RPC, TenantService.GetCurrentTenant, three ways):
//   connect-json-get-current-tenant   POST /tenantd.v1.TenantService/GetCurrentTenant, JSON `{}`
//   rest-get-current-tenant           GET /v1/tenant; ratio against connect-json (target ≥ 0.8)
//   grpc-get-current-tenant           the same over gRPC (5-byte framed empty message), reference
// Hot-path cases against the same child (bench/README.md, "The hot-path cases"):
//   grpc-js-echo              h2load: Health/Check on a bare @grpc/grpc-js server (bench/grpc-echo.ts)
//   grpc-trivial              h2load: Health/Check on tenantd; ratio against grpc-js-echo (≥ 0.8)
//   verify-key-cached         h2load: VerifyKey of a cached key; ratio against grpc-trivial (≥ 0.9)
//   grpc-trivial-h2gen        h2gen (node:http2 generator, one body per request): Health/Check
//   check-rate-limit          h2gen: CheckRateLimit over 10k subjects; ratio against
//                             grpc-trivial-h2gen (≥ 0.7), Redis script calls per request (≤ 1)
//   check-rate-limit-serial   h2gen, one stream: p50 ≤ 300 µs, p99 ≤ 1 ms
//   grpc-trivial-serial       h2gen, one stream: Health/Check, the floor under the row above
//   redis-benchmark(-p16)     EVALSHA of the limiter script straight to Redis: the ceiling

import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb.js";
import { KeyService, VerifyKeyRequestSchema, VerifyKeyResponseSchema } from "../gen/tenantd/v1/key_service_pb.js";
import { RateLimitBucketSchema } from "../gen/tenantd/v1/limit_pb.js";
import { CheckRateLimitRequestSchema, CheckRateLimitResponseSchema } from "../gen/tenantd/v1/limit_service_pb.js";
import { GetCurrentTenantResponseSchema, TenantService } from "../gen/tenantd/v1/tenant_service_pb.js";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { TAKE_TOKENS_LUA } from "../src/store/redis/rate-limiter.js";
import { createLogger } from "../src/transport/logging.js";
import { openTestDatabase } from "../test/helpers/database.js";
import {
  type BenchRow,
  type ChildServer,
  grpcFrame,
  grpcLoad,
  grpcOnce,
  H2LOAD_INSTALL_HINT,
  h2load,
  h2loadVersion,
  type LoadResult,
  type LoadTarget,
  type Measured,
  type RoundCase,
  startChildServer,
  startEchoChild,
  tempBodyFile,
} from "./h2load.js";
import { type UsageBenchOutcome, usageCases } from "./usage-cases.js";

const SEED = Number(process.env.BENCH_TENANTS ?? 1000);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 200);
/**
 * h2load: a timed run (seconds, after an unmeasured warm-up) unless BENCH_H2LOAD_N fixes the
 * request count; clients (connections) and concurrent streams per client.
 */
const H2_DURATION_S = Number(process.env.BENCH_H2LOAD_SECONDS ?? 10);
const H2_WARMUP_S = Number(process.env.BENCH_H2LOAD_WARMUP_SECONDS ?? 2);
const H2_REQUESTS = process.env.BENCH_H2LOAD_N ? Number(process.env.BENCH_H2LOAD_N) : undefined;
const H2_CLIENTS = Number(process.env.BENCH_H2LOAD_C ?? 4);
const H2_STREAMS = Number(process.env.BENCH_H2LOAD_M ?? 16);
/** Measured rounds per h2load case; the order of the cases rotates between rounds. */
const H2_ROUNDS = Number(process.env.BENCH_H2LOAD_ROUNDS ?? 3);
const H2_ENABLED = process.env.BENCH_H2LOAD !== "0";
const REST_TARGET = 0.8;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

async function timeSerial(
  n: number,
  fn: (i: number) => Promise<unknown>,
): Promise<{ p50: number; p99: number; rps: number }> {
  const samples: number[] = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  samples.sort((a, b) => a - b);
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), rps: n / total };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

interface H2Outcome {
  rows: BenchRow[];
  mode: string;
  /** REST ÷ Connect JSON req/s, median of the per-round ratios. */
  restRatio: number;
  sampled: number;
}

/** The tenant, its key and a narrow `keys:verify` service key, created over REST on the child. */
interface BenchTenant {
  tenantId: string;
  apiKey: string;
  serviceKey: string;
}

async function createBenchTenant(child: ChildServer): Promise<BenchTenant> {
  const post = async (path: string, key: string, body: unknown) => {
    const r = await fetch(child.baseUrl + path, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const j = (await r.json()) as Record<string, unknown>;
    if (r.status !== 200) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(j)}`);
    return j;
  };
  const created = await post("/v1/tenants", child.ownerKey, { name: "Bench h2load", email: "bench@example.com" });
  const tenantId = String((created.tenant as Record<string, unknown>).id);
  // No permissions listed: every tenant permission, `limits:check` included.
  const issued = await post(`/v1/tenants/${tenantId}/keys`, child.ownerKey, { label: "bench h2load" });
  const service = await post("/v1/owner/keys", child.ownerKey, {
    label: "bench verifier",
    permissions: ["keys:verify"],
  });
  return { tenantId, apiKey: String(issued.apiKey), serviceKey: String(service.apiKey) };
}

/**
 * GetCurrentTenant three ways under h2load against the child tenantd. Throws when any response
 * is an error.
 */
async function h2loadCases(child: ChildServer, bench: BenchTenant): Promise<H2Outcome> {
  const json = tempBodyFile("get-current-tenant.json", "{}");
  // A gRPC message frame: flag 0 (uncompressed), length 0 (GetCurrentTenantRequest is empty).
  const frame = new Uint8Array(5);
  const grpcBody = tempBodyFile("get-current-tenant.grpc", frame);
  try {
    const { tenantId, apiKey } = bench;
    const auth = `authorization: Bearer ${apiKey}`;
    const procedure = "/tenantd.v1.TenantService/GetCurrentTenant";

    const expectTenant = (name: string, status: number, body: unknown) => {
      const id = (body as { tenant?: { id?: unknown } } | null)?.tenant?.id;
      if (status !== 200 || id !== tenantId) {
        throw new Error(`${name}: sampled response is not the tenant: HTTP ${status} ${JSON.stringify(body)}`);
      }
    };
    const targets: LoadTarget[] = [
      {
        name: "connect-json-get-current-tenant",
        path: procedure,
        headers: ["content-type: application/json", auth],
        bodyFile: json.path,
        async check() {
          const r = await fetch(child.baseUrl + procedure, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
            body: "{}",
          });
          expectTenant(this.name, r.status, await r.json());
        },
      },
      {
        name: "rest-get-current-tenant",
        path: "/v1/tenant",
        headers: [auth],
        async check() {
          const r = await fetch(`${child.baseUrl}/v1/tenant`, { headers: { authorization: `Bearer ${apiKey}` } });
          expectTenant(this.name, r.status, await r.json());
        },
      },
      {
        name: "grpc-get-current-tenant",
        path: procedure,
        headers: ["content-type: application/grpc", "te: trailers", auth],
        bodyFile: grpcBody.path,
        async check() {
          const r = await grpcOnce(
            child.baseUrl,
            procedure,
            { "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${apiKey}` },
            frame,
          );
          if (r.httpStatus !== 200 || r.grpcStatus !== "0" || r.body.length < 5 || r.body[0] !== 0) {
            throw new Error(
              `${this.name}: sampled response is an error: HTTP ${r.httpStatus} grpc-status ${r.grpcStatus} ${r.grpcMessage ?? ""}`,
            );
          }
          const msg = fromBinary(GetCurrentTenantResponseSchema, r.body.subarray(5, 5 + r.body.readUInt32BE(1)));
          expectTenant(this.name, 200, { tenant: { id: msg.tenant?.id } });
        },
      },
    ];
    for (const t of targets) await t.check();

    const opts = {
      requests: H2_REQUESTS,
      durationS: H2_DURATION_S,
      warmUpS: H2_WARMUP_S,
      clients: H2_CLIENTS,
      streams: H2_STREAMS,
      samplesDuring: 5,
    };
    const size = H2_REQUESTS !== undefined ? `-n ${H2_REQUESTS}` : `-D ${H2_DURATION_S} --warm-up-time=${H2_WARMUP_S}`;
    process.stderr.write(
      `bench: h2load ${size} -c ${H2_CLIENTS} -m ${H2_STREAMS}, ${H2_ROUNDS} rounds against ${child.backend}\n`,
    );
    if (H2_REQUESTS !== undefined) {
      // A counted run has no warm-up of its own: one short unmeasured run per case (JIT, key cache, pools).
      for (const t of targets) await h2load(child.baseUrl, t, { ...opts, requests: Math.max(500, H2_REQUESTS / 5) });
    }
    const runs = new Map<string, LoadResult[]>(targets.map((t) => [t.name, []]));
    let sampled = 0;
    for (let round = 0; round < H2_ROUNDS; round++) {
      // Rotating the order spreads any drift of a shared machine over all cases.
      const order = targets.map((_, i) => targets[(i + round) % targets.length] as LoadTarget);
      for (const t of order) {
        const r = await h2load(child.baseUrl, t, opts);
        sampled += r.sampled;
        runs.get(t.name)?.push(r);
        process.stderr.write(`  round ${round + 1} ${t.name}: ${Math.round(r.rps)} req/s\n`);
      }
    }
    const connectRuns = runs.get("connect-json-get-current-tenant") ?? [];
    const pick = (name: string, baseline?: string): BenchRow => {
      const rs = runs.get(name) ?? [];
      // The round with the median throughput, so p50/p99 come from one real run.
      const m = [...rs].sort((a, b) => a.rps - b.rps)[Math.floor(rs.length / 2)] as LoadResult;
      const ratio = baseline ? median(rs.map((r, i) => r.rps / (connectRuns[i]?.rps ?? Number.NaN))) : undefined;
      return {
        case: name,
        rps: Math.round(m.rps),
        p50_us: Math.round(m.p50_us),
        p99_us: Math.round(m.p99_us),
        ratio: ratio === undefined ? null : Number(ratio.toFixed(3)),
        baseline: baseline ?? null,
        redis_ops_per_call: null,
      };
    };
    const rows = [
      pick("connect-json-get-current-tenant"),
      pick("rest-get-current-tenant", "connect-json-get-current-tenant"),
      pick("grpc-get-current-tenant", "connect-json-get-current-tenant"),
    ];
    return {
      rows,
      mode: `h2load -c ${H2_CLIENTS} -m ${H2_STREAMS} (child, ${child.backend})`,
      restRatio: rows[1]?.ratio ?? 0,
      sampled,
    };
  } finally {
    json.remove();
    grpcBody.remove();
  }
}

// ---------------------------------------------------------------------------------------------
// The hot-path cases of the limits issue (see bench/README.md for what each row means).

const GRPC_ECHO_TARGET = 0.8;
const CHECK_RATE_LIMIT_TARGET = 0.7;
const VERIFY_KEY_TARGET = 0.9;
const SERIAL_P50_TARGET_US = 300;
const SERIAL_P99_TARGET_US = 1000;
/** Distinct subjects of the CheckRateLimit load, one request body each. */
const SUBJECTS = Number(process.env.BENCH_SUBJECTS ?? 10_000);
/** Measured seconds of each serial (one client, one stream) run. */
const SERIAL_S = Number(process.env.BENCH_SERIAL_SECONDS ?? 5);
/** Requests of the counted h2load run that gives the h2load rows' redis_ops_per_call. */
const REDIS_COUNT_N = Number(process.env.BENCH_REDIS_COUNT_N ?? 5000);
const HOTPATH_ENABLED = process.env.BENCH_HOTPATH !== "0";
const USAGE_ENABLED = process.env.BENCH_USAGE !== "0";
/** The CheckRateLimit bucket, defined inline on every request: it never refuses, so every decision is measured and none is short-cut. */
const BENCH_BUCKET = { capacity: 1_000_000_000n, refillPerSecond: 1e9 };

/**
 * Script calls per request that are not decisions: the count covers the whole server, and its
 * background work (the usage pipeline's flush, about one script per second) adds a few per
 * thousand requests.
 */
const BACKGROUND_SCRIPTS = 0.01;

/** Lua script calls Redis has executed (INFO commandstats): every limiter decision is one. */
const SCRIPT_COMMANDS = ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"];

async function scriptCalls(redis: Redis): Promise<number> {
  const info = await redis.info("commandstats");
  let calls = 0;
  for (const line of info.split("\n")) {
    const m = /^cmdstat_([a-z_|]+):calls=(\d+)/.exec(line.trim());
    if (m && SCRIPT_COMMANDS.includes(m[1] as string)) calls += Number(m[2]);
  }
  return calls;
}

async function measure<T extends { rps: number; p50_us: number; p99_us: number; responses: number }>(
  redis: Redis | undefined,
  run: () => Promise<T>,
): Promise<Measured> {
  const before = redis ? await scriptCalls(redis) : 0;
  const r = await run();
  const after = redis ? await scriptCalls(redis) : 0;
  return {
    rps: r.rps,
    p50_us: r.p50_us,
    p99_us: r.p99_us,
    responses: r.responses,
    redisCalls: redis ? after - before : null,
  };
}

/**
 * Runs `cases` for H2_ROUNDS rounds, rotating their order, and turns them into rows: the round
 * with the median req/s gives rps/p50/p99, `ratio` is the median of the paired per-round ratios
 * to the case's baseline, `redis_ops_per_call` is Redis script calls over every answered request
 * of all rounds (null where Redis is not in use or the server is not tenantd).
 */
async function rounds(cases: RoundCase[]): Promise<BenchRow[]> {
  const runs = new Map<string, Measured[]>(cases.map((c) => [c.name, []]));
  for (let round = 0; round < H2_ROUNDS; round++) {
    const order = cases.map((_, i) => cases[(i + round) % cases.length] as (typeof cases)[number]);
    for (const c of order) {
      const m = await c.run();
      runs.get(c.name)?.push(m);
      process.stderr.write(`  round ${round + 1} ${c.name}: ${Math.round(m.rps)} req/s\n`);
    }
  }
  const counted = new Map<string, Measured>();
  for (const c of cases) {
    if (c.countRedis && c.redisRun) counted.set(c.name, await c.redisRun());
  }
  const expanded = cases.flatMap((c) => (c.also ? [c, { ...c, ...c.also, runsOf: c.name }] : [c]));
  return expanded.map((c) => {
    const rs = runs.get("runsOf" in c ? c.runsOf : c.name) ?? [];
    const mid = [...rs].sort((a, b) => a.rps - b.rps)[Math.floor(rs.length / 2)] as Measured;
    const base = c.baseline ? (runs.get(c.baseline) ?? []) : [];
    const ratio = c.baseline ? median(rs.map((r, i) => r.rps / (base[i]?.rps ?? Number.NaN))) : null;
    const own = "runsOf" in c ? c.runsOf : c.name;
    const opsRuns = counted.has(own) ? [counted.get(own) as Measured] : rs;
    const calls = opsRuns.reduce((n, r) => n + (r.redisCalls ?? 0), 0);
    const answered = opsRuns.reduce((n, r) => n + r.responses, 0);
    const redisOps = c.countRedis && opsRuns.every((r) => r.redisCalls !== null) ? calls / answered : null;
    return {
      case: c.name,
      rps: Math.round(mid.rps),
      p50_us: Math.round(mid.p50_us),
      p99_us: Math.round(mid.p99_us),
      ratio: ratio === null ? null : Number(ratio.toFixed(3)),
      baseline: c.baseline ?? null,
      redis_ops_per_call: redisOps === null ? null : Number(redisOps.toFixed(3)),
    };
  });
}

/**
 * `redis-benchmark` of the limiter's own script (one bucket, as CheckRateLimit decides it, over
 * 10k keys): the ceiling of Redis for these decisions. Null when it is missing or fails.
 */
function redisBenchmark(
  url: URL,
  sha: string,
  pipeline: number,
): { rps: number; p50_us: number; p99_us: number } | null {
  const args = ["-h", url.hostname || "127.0.0.1", "-p", url.port || "6379", "-n", "100000", "-r", "10000"];
  if (url.password) args.push("-a", decodeURIComponent(url.password));
  args.push(
    "-P",
    String(pipeline),
    "EVALSHA",
    sha,
    // As a folded CheckRateLimit decides (TAKE_TOKENS_LUA): the caller's key and tenant buckets,
    // then the requested bucket of one of 10k subjects; cost 1 each, Redis TIME, continuous.
    "3",
    "rl:{benchrb}:key:key_bench",
    "rl:{benchrb}:tenant",
    "rl:{benchrb}:b:bench:__rand_int__",
    // Redis TIME, then one decision: 3 keys, the first 2 decided together at cost 1, the third
    // after them at cost 1.
    "",
    "3",
    "2",
    "1",
    "1",
    ...["1000000000", "1000000000", "0"],
    ...["1000000000", "1000000000", "0"],
    ...["1000000000", "1000000000", "0"],
  );
  const r = spawnSync("redis-benchmark", args, { encoding: "utf8", timeout: 120_000 });
  if (r.error || r.status !== 0) return null;
  // Summary:
  //   throughput summary: 65359.48 requests per second
  //   latency summary (msec):
  //           avg       min       p50       p95       p99       max
  //         2.823     0.488     2.135     5.815    17.391    17.679
  const text = r.stdout.replaceAll("\r", "\n");
  const rps = /throughput summary: ([\d.]+) requests per second/.exec(text);
  const lat = /avg\s+min\s+p50\s+p95\s+p99\s+max\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)/.exec(text);
  if (!rps || !lat || /error/i.test(text)) return null;
  return { rps: Number(rps[1]), p50_us: Number(lat[3]) * 1000, p99_us: Number(lat[5]) * 1000 };
}

interface HotPathOutcome {
  rows: BenchRow[];
  modes: Map<string, string>;
  notes: string[];
}

async function hotPathCases(child: ChildServer, bench: BenchTenant, useH2load: boolean): Promise<HotPathOutcome> {
  const root = join(import.meta.dirname, "..");
  const redisUrl = process.env.REDIS_URL || undefined;
  const redis = redisUrl ? new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 }) : undefined;
  if (redis) await redis.connect();
  const rows: BenchRow[] = [];
  const modes = new Map<string, string>();
  const notes: string[] = [];
  const grpcHeaders = { "content-type": "application/grpc", te: "trailers" };
  const healthPath = "/grpc.health.v1.Health/Check";
  const healthFrame = grpcFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {})));
  const expectServing = (name: string, message: Buffer) => {
    const status = fromBinary(HealthCheckResponseSchema, message).status;
    if (status !== ServingStatus.SERVING) throw new Error(`${name}: Health/Check answered status ${status}`);
  };
  const verifyPath = "/tenantd.v1.KeyService/VerifyKey";
  const verifyFrame = grpcFrame(
    toBinary(VerifyKeyRequestSchema, create(VerifyKeyRequestSchema, { apiKey: bench.apiKey })),
  );
  const expectValid = (name: string, message: Buffer) => {
    const v = fromBinary(VerifyKeyResponseSchema, message);
    if (!v.valid || v.tenantId !== bench.tenantId) {
      throw new Error(`${name}: VerifyKey answered valid=${v.valid} tenant=${v.tenantId} reason=${v.reason}`);
    }
  };
  const checkPath = "/tenantd.v1.LimitService/CheckRateLimit";
  const subjects = Array.from({ length: SUBJECTS }, (_, i) => `subject-${i}`);
  const checkBodies = subjects.map((subject) =>
    grpcFrame(
      toBinary(
        CheckRateLimitRequestSchema,
        create(CheckRateLimitRequestSchema, {
          bucket: "bench.requests",
          subject,
          definition: create(RateLimitBucketSchema, BENCH_BUCKET),
        }),
      ),
    ),
  );
  const expectAllowed = (message: Buffer) => {
    const d = fromBinary(CheckRateLimitResponseSchema, message);
    if (!d.allowed || d.limit !== BENCH_BUCKET.capacity) {
      throw new Error(`CheckRateLimit answered allowed=${d.allowed} limit=${d.limit} (expected allowed, limit 1e9)`);
    }
  };
  const tenantAuth = { authorization: `Bearer ${bench.apiKey}` };
  const serviceAuth = { authorization: `Bearer ${bench.serviceKey}` };
  const sampleOnce = async (baseUrl: string, path: string, headers: Record<string, string>, body: Uint8Array) => {
    const r = await grpcOnce(baseUrl, path, headers, body);
    if (r.httpStatus !== 200 || r.grpcStatus !== "0" || r.body.length < 5 || r.body[0] !== 0) {
      throw new Error(
        `${path}: sampled response is an error: HTTP ${r.httpStatus} grpc-status ${r.grpcStatus} ${r.grpcMessage ?? ""}`,
      );
    }
    return r.body.subarray(5, 5 + r.body.readUInt32BE(1));
  };

  const echo = await startEchoChild(root);
  const healthBody = tempBodyFile("health-check.grpc", healthFrame);
  const verifyBody = tempBodyFile("verify-key.grpc", verifyFrame);
  try {
    const h2opts = {
      requests: H2_REQUESTS,
      durationS: H2_DURATION_S,
      warmUpS: H2_WARMUP_S,
      clients: H2_CLIENTS,
      streams: H2_STREAMS,
      samplesDuring: 5,
    };
    // Counted (-n) h2load runs for redis_ops_per_call: every request is counted, none is a warm-up.
    const countedOpts = { ...h2opts, requests: REDIS_COUNT_N, samplesDuring: 1 };
    const genOpts = {
      connections: H2_CLIENTS,
      streams: H2_STREAMS,
      durationS: H2_DURATION_S,
      warmUpS: H2_WARMUP_S,
    };
    const healthTarget = (name: string, baseUrl: string): LoadTarget => ({
      name,
      path: healthPath,
      headers: ["content-type: application/grpc", "te: trailers"],
      bodyFile: healthBody.path,
      async check() {
        expectServing(name, await sampleOnce(baseUrl, healthPath, grpcHeaders, healthFrame));
      },
    });
    const verifyTarget: LoadTarget = {
      name: "verify-key-cached",
      path: verifyPath,
      headers: ["content-type: application/grpc", "te: trailers", `authorization: ${serviceAuth.authorization}`],
      bodyFile: verifyBody.path,
      async check() {
        expectValid(
          this.name,
          await sampleOnce(child.baseUrl, verifyPath, { ...grpcHeaders, ...serviceAuth }, verifyFrame),
        );
      },
    };
    const echoTarget = healthTarget("grpc-js-echo", echo.baseUrl);
    const trivialTarget = healthTarget("grpc-trivial", child.baseUrl);
    for (const t of [echoTarget, trivialTarget, verifyTarget]) await t.check();
    expectAllowed(
      await sampleOnce(child.baseUrl, checkPath, { ...grpcHeaders, ...tenantAuth }, checkBodies[0] as Uint8Array),
    );

    // 1. Under h2load (one body per process): grpc-js echo, tenantd's trivial RPC, cached VerifyKey.
    const h2mode = `h2load -c ${H2_CLIENTS} -m ${H2_STREAMS} (child)`;
    const h2EchoMode = `h2load -c ${H2_CLIENTS} -m ${H2_STREAMS} (grpc-js child)`;
    if (useH2load) {
      process.stderr.write(
        `bench: hot path under h2load: ${H2_ROUNDS} rounds of grpc-js-echo, grpc-trivial, verify-key-cached\n`,
      );
      if (H2_REQUESTS !== undefined) {
        for (const t of [echoTarget, trivialTarget, verifyTarget]) {
          await h2load(t === echoTarget ? echo.baseUrl : child.baseUrl, t, {
            ...h2opts,
            requests: Math.max(500, H2_REQUESTS / 5),
          });
        }
      }
      const h2rows = await rounds([
        {
          name: "grpc-js-echo",
          countRedis: false,
          run: () => measure(undefined, () => h2load(echo.baseUrl, echoTarget, h2opts)),
        },
        {
          name: "grpc-trivial",
          baseline: "grpc-js-echo",
          countRedis: true,
          run: () => measure(redis, () => h2load(child.baseUrl, trivialTarget, h2opts)),
          redisRun: () => measure(redis, () => h2load(child.baseUrl, trivialTarget, countedOpts)),
        },
        {
          name: "verify-key-cached",
          baseline: "grpc-trivial",
          countRedis: true,
          run: () => measure(redis, () => h2load(child.baseUrl, verifyTarget, h2opts)),
          redisRun: () => measure(redis, () => h2load(child.baseUrl, verifyTarget, countedOpts)),
        },
      ]);
      for (const r of h2rows) {
        rows.push(r);
        modes.set(r.case, r.case === "grpc-js-echo" ? h2EchoMode : h2mode);
      }
    } else {
      notes.push("grpc-js-echo, grpc-trivial and verify-key-cached need h2load and were skipped.");
    }

    // 2. Under h2gen (a body per request): the trivial RPC again, and CheckRateLimit over SUBJECTS subjects.
    process.stderr.write(
      `bench: hot path under h2gen: ${H2_ROUNDS} rounds of grpc-trivial-h2gen, check-rate-limit (${SUBJECTS} subjects)\n`,
    );
    const genRows = await rounds([
      {
        name: "grpc-trivial-h2gen",
        countRedis: true,
        run: () =>
          measure(redis, () =>
            grpcLoad({
              ...genOpts,
              baseUrl: child.baseUrl,
              path: healthPath,
              headers: grpcHeaders,
              bodies: [healthFrame],
              checkMessage: (m) => expectServing("grpc-trivial-h2gen", m),
            }),
          ),
      },
      {
        name: "check-rate-limit",
        baseline: "grpc-trivial-h2gen",
        countRedis: true,
        run: () =>
          measure(redis, () =>
            grpcLoad({
              ...genOpts,
              baseUrl: child.baseUrl,
              path: checkPath,
              headers: { ...grpcHeaders, ...tenantAuth },
              bodies: checkBodies,
              checkMessage: (m) => expectAllowed(m),
            }),
          ),
      },
    ]);
    const genMode = `h2gen -c ${H2_CLIENTS} -m ${H2_STREAMS} (child)`;
    for (const r of genRows) {
      rows.push(r);
      modes.set(r.case, r.case === "check-rate-limit" ? `${genMode}, ${SUBJECTS} subjects` : genMode);
    }

    // 3. Serial: one connection, one stream in flight.
    process.stderr.write(`bench: serial CheckRateLimit and Health/Check, ${SERIAL_S} s each\n`);
    const serialOpts = { connections: 1, streams: 1, durationS: SERIAL_S, warmUpS: Math.min(1, H2_WARMUP_S) };
    const serialRows = await rounds([
      {
        name: "check-rate-limit-serial",
        countRedis: true,
        run: () =>
          measure(redis, () =>
            grpcLoad({
              ...serialOpts,
              baseUrl: child.baseUrl,
              path: checkPath,
              headers: { ...grpcHeaders, ...tenantAuth },
              bodies: checkBodies,
              checkMessage: (m) => expectAllowed(m),
            }),
          ),
      },
      {
        name: "grpc-trivial-serial",
        countRedis: true,
        run: () =>
          measure(redis, () =>
            grpcLoad({
              ...serialOpts,
              baseUrl: child.baseUrl,
              path: healthPath,
              headers: grpcHeaders,
              bodies: [healthFrame],
              checkMessage: (m) => expectServing("grpc-trivial-serial", m),
            }),
          ),
      },
    ]);
    for (const r of serialRows) {
      rows.push(r);
      modes.set(r.case, "h2gen -c 1 -m 1 (child), serial");
    }

    // 4. The Redis ceiling for the same script.
    if (redis && redisUrl) {
      const sha = String(await redis.script("LOAD", TAKE_TOKENS_LUA));
      for (const pipeline of [1, 16]) {
        const name = pipeline === 1 ? "redis-benchmark" : `redis-benchmark-p${pipeline}`;
        const rb = redisBenchmark(new URL(redisUrl), sha, pipeline);
        if (rb === null) {
          notes.push(
            `${name} skipped: redis-benchmark is not on PATH or failed (Debian/Ubuntu: sudo apt-get install redis-tools).`,
          );
          continue;
        }
        rows.push({
          case: name,
          rps: Math.round(rb.rps),
          p50_us: Math.round(rb.p50_us),
          p99_us: Math.round(rb.p99_us),
          ratio: null,
          baseline: null,
          redis_ops_per_call: 1,
        });
        modes.set(name, `redis-benchmark -n 100000 -P ${pipeline} EVALSHA (50 clients, 10k keys)`);
      }
    } else {
      notes.push("redis-benchmark skipped: REDIS_URL is unset (the in-process limiter decides).");
    }
    return { rows, modes, notes };
  } finally {
    healthBody.remove();
    verifyBody.remove();
    await echo.stop();
    redis?.disconnect();
  }
}

async function main(): Promise<void> {
  const testDb = await openTestDatabase({ poolMax: 10 });
  const unlimited = { capacity: 1e9, refillPerSec: 1e9 };
  const config = {
    ...loadConfig({}),
    logLevel: "silent" as const,
    redisUrl: process.env.REDIS_URL || undefined,
    // Serial RPC timings measure the RPC, not the plan's budget; the limiter still decides every call.
    rateLimitPlans: { plans: { free: { key: unlimited, tenant: unlimited } }, owner: unlimited },
  };
  const app = await createApp(config, { database: testDb.db, log: createLogger("silent"), print: () => {} });
  const { port } = await app.listen(0, "127.0.0.1");
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` });
  const tenants = createClient(TenantService, transport);
  const keys = createClient(KeyService, transport);
  const owner = { headers: { authorization: `Bearer ${app.bootstrapKey}` } };
  const backend = `${testDb.kind}${config.redisUrl ? "+redis" : ""}`;
  const results: BenchRow[] = [];
  try {
    process.stderr.write(`bench: backend ${backend}; seeding ${SEED} tenants …\n`);
    const seeded: string[] = [];
    for (let i = 0; i < SEED; i += 8) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(8, SEED - i) }, (_, j) =>
          tenants.createTenant({ name: `Seed ${i + j}`, email: "seed@example.com" }, owner),
        ),
      );
      for (const r of batch) seeded.push(r.tenant?.id ?? "");
      if ((i / 8) % 25 === 0) process.stderr.write(`  seeded ${seeded.length}/${SEED}\n`);
    }

    const created: string[] = [];
    const create = await timeSerial(SAMPLES, async (i) => {
      const r = await tenants.createTenant({ name: `Bench ${i}`, email: "bench@example.com" }, owner);
      created.push(r.tenant?.id ?? "");
    });
    const get = await timeSerial(SAMPLES * 5, (i) => tenants.getTenant({ tenantId: seeded[i % seeded.length] }, owner));
    const serviceKey = await keys.createOwnerKey({ label: "bench verifier", permissions: ["keys:verify"] }, owner);
    const tenantKey = await keys.createKey({ tenantId: seeded[0], label: "bench" }, owner);
    const svc = { headers: { authorization: `Bearer ${serviceKey.apiKey}` } };
    const verify = await timeSerial(SAMPLES * 5, () => keys.verifyKey({ apiKey: tenantKey.apiKey }, svc));
    const del = await timeSerial(created.length, (i) => tenants.deleteTenant({ tenantId: created[i] }, owner));

    const row = (
      name: string,
      m: { p50: number; p99: number; rps: number },
      baseline?: { name: string; rps: number },
    ): BenchRow => ({
      case: name,
      rps: Math.round(m.rps),
      p50_us: Math.round(m.p50),
      p99_us: Math.round(m.p99),
      ratio: baseline ? Number((m.rps / baseline.rps).toFixed(3)) : null,
      baseline: baseline?.name ?? null,
      redis_ops_per_call: null,
    });
    results.push(row("create-tenant", create));
    results.push(row("delete-tenant", del));
    results.push(row("get-tenant", get));
    results.push(row("verify-key (cached)", verify, { name: "get-tenant", rps: get.rps }));
  } finally {
    await app.close();
    await testDb.close();
  }

  // After the in-process server is gone, so the two never compete for the CPU.
  const modes = new Map<string, string>(results.map((r) => [r.case, "serial gRPC, in process"]));
  let h2: H2Outcome | undefined;
  let hot: HotPathOutcome | undefined;
  let usage: UsageBenchOutcome | undefined;
  let h2Version: string | undefined;
  if (!H2_ENABLED) {
    process.stderr.write("bench: BENCH_H2LOAD=0, skipping the h2load cases\n");
  } else {
    h2Version = h2loadVersion();
    if (!h2Version) {
      process.stderr.write(`bench: ${H2LOAD_INSTALL_HINT}\n`);
      console.log(`\n${H2LOAD_INSTALL_HINT}`);
    }
  }
  if (h2Version || HOTPATH_ENABLED || USAGE_ENABLED) {
    process.stderr.write(`bench: ${h2Version ?? "no h2load"}; starting tenantd as a child process …\n`);
    const child = await startChildServer(join(import.meta.dirname, ".."));
    try {
      const bench = await createBenchTenant(child);
      if (h2Version) {
        h2 = await h2loadCases(child, bench);
        for (const r of h2.rows) {
          results.push(r);
          modes.set(r.case, h2.mode);
        }
      }
      if (HOTPATH_ENABLED) {
        hot = await hotPathCases(child, bench, h2Version !== undefined);
        for (const r of hot.rows) {
          results.push(r);
          modes.set(r.case, hot.modes.get(r.case) ?? "");
        }
      }
      if (USAGE_ENABLED) {
        process.stderr.write(`bench: usage: ${H2_ROUNDS} rounds of counting off/on, Health/Check, RecordUsage\n`);
        const redis = process.env.REDIS_URL ? new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: 1 }) : undefined;
        try {
          usage = await usageCases({
            child,
            redis,
            rounds,
            measure,
            genOpts: { connections: H2_CLIENTS, streams: H2_STREAMS, durationS: H2_DURATION_S, warmUpS: H2_WARMUP_S },
          });
        } finally {
          redis?.disconnect();
        }
        for (const r of usage.rows) {
          results.push(r);
          modes.set(r.case, usage.modes.get(r.case) ?? "");
        }
      }
    } finally {
      await child.stop();
    }
  }

  const redisNote = process.env.REDIS_URL ? "Redis" : "in-process limiter, no Redis";
  console.log(`\ntenantd bench — ${backend}, ${SEED} tenants present (${redisNote})\n`);
  console.log("| case | mode | req/s | p50 (ms) | p99 (ms) | ratio | baseline | Redis ops/call |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.case} | ${modes.get(r.case)} | ${r.rps} | ${(r.p50_us / 1000).toFixed(3)} | ${(r.p99_us / 1000).toFixed(3)} | ${r.ratio ?? "—"} | ${r.baseline ?? "—"} | ${r.redis_ops_per_call ?? "—"} |`,
    );
  }
  console.log("");
  const created = results.find((r) => r.case === "create-tenant");
  if (created) {
    const target = created.p50_us <= 50_000 ? "meets" : "MISSES";
    console.log(`CreateTenant p50 ${(created.p50_us / 1000).toFixed(1)} ms ${target} the 50 ms target.`);
  }
  if (h2) {
    const verdict = h2.restRatio >= REST_TARGET ? "meets" : "MISSES";
    console.log(
      `REST/Connect JSON throughput ${h2.restRatio} (median of ${H2_ROUNDS} paired rounds) ${verdict} the ${REST_TARGET}× target; ${h2.sampled} responses sampled during and after the loads, all correct.`,
    );
  }
  if (hot) {
    const row = (name: string) => results.find((r) => r.case === name);
    const verdict = (ok: boolean) => (ok ? "meets" : "MISSES");
    const ratioLine = (name: string, target: number) => {
      const r = row(name);
      if (r?.ratio == null) return;
      console.log(`${name} / ${r.baseline}: ${r.ratio} ${verdict(r.ratio >= target)} the ≥ ${target}× target.`);
    };
    ratioLine("grpc-trivial", GRPC_ECHO_TARGET);
    ratioLine("check-rate-limit", CHECK_RATE_LIMIT_TARGET);
    ratioLine("verify-key-cached", VERIFY_KEY_TARGET);
    const ops = row("check-rate-limit")?.redis_ops_per_call;
    console.log(
      ops == null
        ? "check-rate-limit Redis ops per call: not measured (REDIS_URL unset: the in-process limiter decides)."
        : `check-rate-limit Redis script calls per request: ${ops} ${verdict(ops <= 1 + BACKGROUND_SCRIPTS)} the ≤ 1 target (the caller's key and tenant buckets and the requested bucket are one script; up to ${BACKGROUND_SCRIPTS} above 1 is the app's background scripts, such as the usage flush, counted with the requests).`,
    );
    const verifyOps = row("verify-key-cached")?.redis_ops_per_call;
    if (verifyOps != null) {
      console.log(
        `verify-key-cached Redis script calls per request: ${verifyOps} (the verification is served from the cache; any call here is the caller's own per-call rate limit).`,
      );
    }
    const serial = row("check-rate-limit-serial");
    if (serial) {
      console.log(
        `check-rate-limit-serial p50 ${serial.p50_us} µs ${verdict(serial.p50_us <= SERIAL_P50_TARGET_US)} the ≤ ${SERIAL_P50_TARGET_US} µs target; p99 ${serial.p99_us} µs ${verdict(serial.p99_us <= SERIAL_P99_TARGET_US)} the ≤ ${SERIAL_P99_TARGET_US} µs target (client overhead included: see grpc-trivial-serial).`,
      );
    }
    for (const n of hot.notes) console.log(n);
    console.log(
      "Every h2gen response was checked for HTTP 200 and grpc-status 0; h2load runs were sampled; all correct.",
    );
  }
  for (const l of usage?.lines ?? []) console.log(l);
  writeFileSync(join(import.meta.dirname, "results", "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

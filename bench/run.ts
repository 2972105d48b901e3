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
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { KeyService } from "../gen/tenantd/v1/key_service_pb.js";
import { GetCurrentTenantResponseSchema, TenantService } from "../gen/tenantd/v1/tenant_service_pb.js";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/transport/logging.js";
import { openTestDatabase } from "../test/helpers/database.js";
import {
  grpcOnce,
  H2LOAD_INSTALL_HINT,
  h2load,
  h2loadVersion,
  type LoadResult,
  type LoadTarget,
  startChildServer,
  tempBodyFile,
} from "./h2load.js";

interface Result {
  case: string;
  rps: number;
  p50_us: number;
  p99_us: number;
  ratio: number | null;
  baseline: string | null;
  redis_ops_per_call: number | null;
}

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
  rows: Result[];
  mode: string;
  /** REST ÷ Connect JSON req/s, median of the per-round ratios. */
  restRatio: number;
  sampled: number;
}

/**
 * GetCurrentTenant three ways under h2load against a child tenantd. Returns undefined (after
 * printing how to install it) when h2load is missing. Throws when any response is an error.
 */
async function h2loadCases(): Promise<H2Outcome | undefined> {
  if (!H2_ENABLED) {
    process.stderr.write("bench: BENCH_H2LOAD=0, skipping the h2load cases\n");
    return undefined;
  }
  const version = h2loadVersion();
  if (!version) {
    process.stderr.write(`bench: ${H2LOAD_INSTALL_HINT}\n`);
    console.log(`\n${H2LOAD_INSTALL_HINT}`);
    return undefined;
  }
  process.stderr.write(`bench: ${version}; starting tenantd as a child process …\n`);
  const child = await startChildServer(join(import.meta.dirname, ".."));
  const json = tempBodyFile("get-current-tenant.json", "{}");
  // A gRPC message frame: flag 0 (uncompressed), length 0 (GetCurrentTenantRequest is empty).
  const frame = new Uint8Array(5);
  const grpcBody = tempBodyFile("get-current-tenant.grpc", frame);
  try {
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
    const issued = await post(`/v1/tenants/${tenantId}/keys`, child.ownerKey, { label: "bench h2load" });
    const apiKey = String(issued.apiKey);
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
    const pick = (name: string, baseline?: string): Result => {
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
    await child.stop();
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
  const results: Result[] = [];
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
    ): Result => ({
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
  const h2 = await h2loadCases();
  const modes = new Map<string, string>(results.map((r) => [r.case, "serial gRPC, in process"]));
  if (h2) {
    for (const r of h2.rows) {
      results.push(r);
      modes.set(r.case, h2.mode);
    }
  }

  console.log(`\ntenantd bench — ${backend}, ${SEED} tenants present\n`);
  console.log("| case | mode | req/s | p50 (ms) | p99 (ms) | ratio | baseline |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.case} | ${modes.get(r.case)} | ${r.rps} | ${(r.p50_us / 1000).toFixed(2)} | ${(r.p99_us / 1000).toFixed(2)} | ${r.ratio ?? "—"} | ${r.baseline ?? "—"} |`,
    );
  }
  const created = results.find((r) => r.case === "create-tenant");
  if (created) {
    const target = created.p50_us <= 50_000 ? "meets" : "MISSES";
    console.log(`\nCreateTenant p50 ${(created.p50_us / 1000).toFixed(1)} ms ${target} the 50 ms target.`);
  }
  if (h2) {
    const verdict = h2.restRatio >= REST_TARGET ? "meets" : "MISSES";
    console.log(
      `REST/Connect JSON throughput ${h2.restRatio} (median of ${H2_ROUNDS} paired rounds) ${verdict} the ${REST_TARGET}× target; ${h2.sampled} responses sampled during and after the loads, all correct.`,
    );
  }
  writeFileSync(join(import.meta.dirname, "results", "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

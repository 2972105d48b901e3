// The usage cases of `npm run bench`: what counting costs on the call path.
//
//   current-tenant-uncounted  GetCurrentTenant over gRPC on a second child started with
//                             TENANTD_USAGE_COUNTING=0: the same authenticated RPC, not counted
//   current-tenant-counted    the same RPC on the main child, which counts api_calls; its ratio
//                             to the uncounted row is the cost of counting (target ≥ 0.9)
//   usage-trivial             grpc.health.v1.Health/Check on the main child: the trivial RPC
//   record-usage-no-auth      the same RecordUsage on a third child (bench/unauthenticated-main.ts)
//                             that trusts each caller after its first call: no verification,
//                             per-call rate limit or usage count
//   record-usage              UsageService.RecordUsage (llm_tokens, 1 unit) on the main child;
//                             its ratio to the trivial RPC is quality.md's figure (target ≥ 0.9);
//                             the printed lines also give it against the counted GetCurrentTenant,
//                             which pays the same authentication and per-call rate limit
//   authenticated-overhead    record-usage's runs again, ratio over record-usage-no-auth: what
//                             auth + rate limit + usage count cost a call (target ≥ 0.7)
//
// The children are fresh tenantd processes with the same stores and plans; h2gen (a body per
// request, every status checked, every 97th message decoded) drives each case in turn, rounds
// rotating. Redis script calls per request are read around each run; the trivial RPC pays the
// per-call rate limit too, so RecordUsage's own Redis operations are the difference of the two
// rows. After the loads the runner waits for a flush and checks that the main child's durable
// api_calls and llm_tokens equal the requests it answered.
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";
import { GetCurrentTenantResponseSchema } from "../gen/tenantd/v1/tenant_service_pb.js";
import { RecordUsageRequestSchema, RecordUsageResponseSchema } from "../gen/tenantd/v1/usage_service_pb.js";
import {
  type BenchRow,
  type ChildServer,
  grpcFrame,
  grpcLoad,
  type Measured,
  type RoundCase,
  startChildServer,
} from "./h2load.js";

export const COUNTING_TARGET = 0.9;
export const RECORD_USAGE_TARGET = 0.9;
export const RECORD_USAGE_OPS_TARGET = 0.05;
export const AUTH_OVERHEAD_TARGET = 0.7;

export interface UsageBenchDeps {
  /** The main child (counting on, the default). */
  child: ChildServer;
  redis: Redis | undefined;
  rounds: (cases: RoundCase[]) => Promise<BenchRow[]>;
  measure: (
    redis: Redis | undefined,
    run: () => Promise<{ rps: number; p50_us: number; p99_us: number; responses: number }>,
  ) => Promise<Measured>;
  genOpts: { connections: number; streams: number; durationS: number; warmUpS: number };
}

export interface UsageBenchOutcome {
  rows: BenchRow[];
  modes: Map<string, string>;
  lines: string[];
}

async function restJson(baseUrl: string, method: string, path: string, key: string, body?: unknown) {
  const r = await fetch(baseUrl + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const j = (await r.json()) as Record<string, unknown>;
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

/** A tenant and a key with every tenant permission, created over REST by the owner. */
async function newTenant(child: ChildServer, name: string): Promise<{ tenantId: string; key: string }> {
  const created = await restJson(child.baseUrl, "POST", "/v1/tenants", child.ownerKey, {
    name,
    email: "bench@example.com",
  });
  const tenantId = String((created.tenant as Record<string, unknown>).id);
  const issued = await restJson(child.baseUrl, "POST", `/v1/tenants/${tenantId}/keys`, child.ownerKey, {
    label: name,
  });
  return { tenantId, key: String(issued.apiKey) };
}

export async function usageCases(deps: UsageBenchDeps): Promise<UsageBenchOutcome> {
  const { child, redis, rounds, measure, genOpts } = deps;
  const root = join(import.meta.dirname, "..");
  const uncounted = await startChildServer(root, { env: { TENANTD_USAGE_COUNTING: "0" } });
  let unauthenticated: ChildServer | undefined;
  try {
    unauthenticated = await startChildServer(root, { entry: "bench/unauthenticated-main.ts" });
    const a = await newTenant(child, "Bench usage");
    const b = await newTenant(uncounted, "Bench usage (not counted)");
    const c = await newTenant(unauthenticated, "Bench usage (auth disabled)");
    const noAuth = unauthenticated;
    const grpcHeaders = { "content-type": "application/grpc", te: "trailers" };
    const currentPath = "/tenantd.v1.TenantService/GetCurrentTenant";
    const recordPath = "/tenantd.v1.UsageService/RecordUsage";
    const empty = new Uint8Array(5);
    const recordFrame = grpcFrame(
      toBinary(RecordUsageRequestSchema, create(RecordUsageRequestSchema, { metric: "llm_tokens", quantity: 1n })),
    );
    const expectTenant = (tenantId: string) => (m: Buffer) => {
      const got = fromBinary(GetCurrentTenantResponseSchema, m).tenant?.id;
      if (got !== tenantId) throw new Error(`GetCurrentTenant answered tenant ${got}, expected ${tenantId}`);
    };
    const healthPath = "/grpc.health.v1.Health/Check";
    const healthFrame = grpcFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {})));
    const expectServing = (m: Buffer) => {
      const status = fromBinary(HealthCheckResponseSchema, m).status;
      if (status !== HealthCheckResponse_ServingStatus.SERVING) throw new Error(`Health/Check answered ${status}`);
    };
    const expectRecorded = (m: Buffer) => {
      const r = fromBinary(RecordUsageResponseSchema, m);
      if (r.duplicate || r.periodTotal < 1n) throw new Error(`RecordUsage answered ${JSON.stringify(r)}`);
    };
    // Requests answered by the main child with the usage tenant's key: what it must count.
    let calls = 0;
    let recorded = 0;
    const load = (c: ChildServer, key: string, path: string, body: Uint8Array, check: (m: Buffer) => void) =>
      grpcLoad({
        ...genOpts,
        baseUrl: c.baseUrl,
        path,
        headers: key === "" ? grpcHeaders : { ...grpcHeaders, authorization: `Bearer ${key}` },
        bodies: [body],
        checkMessage: (m) => check(m),
      });
    const rows = await rounds([
      {
        name: "current-tenant-uncounted",
        countRedis: true,
        run: () => measure(redis, () => load(uncounted, b.key, currentPath, empty, expectTenant(b.tenantId))),
      },
      {
        name: "current-tenant-counted",
        baseline: "current-tenant-uncounted",
        countRedis: true,
        run: () =>
          measure(redis, async () => {
            const r = await load(child, a.key, currentPath, empty, expectTenant(a.tenantId));
            calls += r.responses;
            return r;
          }),
      },
      {
        name: "usage-trivial",
        countRedis: true,
        run: () => measure(redis, () => load(child, "", healthPath, healthFrame, expectServing)),
      },
      {
        name: "record-usage-no-auth",
        countRedis: true,
        run: () => measure(redis, () => load(noAuth, c.key, recordPath, recordFrame, expectRecorded)),
      },
      {
        name: "record-usage",
        baseline: "usage-trivial",
        also: { name: "authenticated-overhead", baseline: "record-usage-no-auth" },
        countRedis: true,
        run: () =>
          measure(redis, async () => {
            const r = await load(child, a.key, recordPath, recordFrame, expectRecorded);
            calls += r.responses;
            recorded += r.responses;
            return r;
          }),
      },
    ]);

    // Counted exactly? Wait for the children's flush (every second) and read the durable totals.
    let summary: Record<string, unknown> = {};
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 500));
      summary = (await restJson(child.baseUrl, "GET", `/v1/tenants/${a.tenantId}/usage`, child.ownerKey))
        .summary as Record<string, unknown>;
      if (Number(summary.apiCalls ?? 0) >= calls) break;
    }
    const countedCalls = Number(summary.apiCalls ?? 0);
    const countedTokens = Number(summary.llmTokens ?? 0);
    if (countedCalls !== calls || countedTokens !== recorded) {
      throw new Error(
        `usage counts differ from the requests answered: api_calls ${countedCalls} vs ${calls}, llm_tokens ${countedTokens} vs ${recorded}`,
      );
    }

    const row = (n: string) => rows.find((r) => r.case === n);
    const verdict = (ok: boolean) => (ok ? "meets" : "MISSES");
    const lines: string[] = [];
    const counted = row("current-tenant-counted");
    const record = row("record-usage");
    if (counted?.ratio != null) {
      lines.push(
        `Counting on ÷ off (GetCurrentTenant over gRPC): ${counted.ratio} ${verdict(counted.ratio >= COUNTING_TARGET)} the ≥ ${COUNTING_TARGET}× target.`,
      );
    }
    if (record?.ratio != null && counted) {
      const vsCounted = (record.rps / counted.rps).toFixed(3);
      lines.push(
        `record-usage ÷ usage-trivial (Health/Check): ${record.ratio} ${verdict(record.ratio >= RECORD_USAGE_TARGET)} the ≥ ${RECORD_USAGE_TARGET}× target; ÷ current-tenant-counted (same authentication and rate limit): ${vsCounted} (median rounds).`,
      );
    }
    const overhead = row("authenticated-overhead");
    if (overhead?.ratio != null) {
      lines.push(
        `authenticated-overhead (RecordUsage with auth, per-call rate limit and usage count ÷ the same RPC with auth disabled): ${overhead.ratio} ${verdict(overhead.ratio >= AUTH_OVERHEAD_TARGET)} the ≥ ${AUTH_OVERHEAD_TARGET}× target.`,
      );
    }
    if (record?.redis_ops_per_call != null && counted?.redis_ops_per_call != null) {
      const own = Math.max(0, record.redis_ops_per_call - counted.redis_ops_per_call);
      lines.push(
        `RecordUsage's own Redis script calls per request: ${own.toFixed(3)} ${verdict(own <= RECORD_USAGE_OPS_TARGET)} the ≤ ${RECORD_USAGE_OPS_TARGET} target (record-usage ${record.redis_ops_per_call} − current-tenant-counted ${counted.redis_ops_per_call}, which pays the same per-call rate limit).`,
      );
    } else {
      lines.push(
        "RecordUsage Redis operations: not measured (REDIS_URL unset: usage is applied straight to Postgres).",
      );
    }
    lines.push(
      `Usage counted exactly: ${calls} calls answered → api_calls ${countedCalls}; ${recorded} RecordUsage → llm_tokens ${countedTokens}.`,
    );
    const mode = `h2gen -c ${genOpts.connections} -m ${genOpts.streams} (child)`;
    return {
      rows,
      modes: new Map(
        rows.map((r) => [
          r.case,
          r.case.endsWith("uncounted")
            ? `${mode}, counting off`
            : r.case.endsWith("no-auth")
              ? `${mode}, auth disabled`
              : mode,
        ]),
      ),
      lines,
    };
  } finally {
    await uncounted.stop();
    await unauthenticated?.stop();
  }
}

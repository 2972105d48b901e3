// `npm run bench`: end-to-end benchmarks of tenantd's RPCs, measured through a real server and
// real gRPC clients, on the backends the environment selects (Postgres + Redis when DATABASE_URL
// and REDIS_URL are set; PGlite otherwise). Prints a table and writes bench/results/latest.json as
// a list of { case, rps, p50_us, p99_us, ratio, baseline, redis_ops_per_call }.
//
// Cases today (the foundation issue):
//   create-tenant   CreateTenant, serial, with BENCH_TENANTS (default 1000) tenants present
//   delete-tenant   DeleteTenant, serial
//   get-tenant      GetTenant, serial: the trivial authenticated RPC, baseline for the others
//   verify-key      KeyService.VerifyKey of a cached key, serial; ratio against get-tenant
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { KeyService } from "../gen/tenantd/v1/key_service_pb.js";
import { TenantService } from "../gen/tenantd/v1/tenant_service_pb.js";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { createLogger } from "../src/transport/logging.js";
import { openTestDatabase } from "../test/helpers/database.js";

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

async function main(): Promise<void> {
  const testDb = await openTestDatabase({ poolMax: 10 });
  const config = { ...loadConfig({}), logLevel: "silent" as const, redisUrl: process.env.REDIS_URL || undefined };
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

    console.log(`\ntenantd bench — ${backend}, ${SEED} tenants present, serial calls over gRPC (h2c)\n`);
    console.log("| case | req/s | p50 (ms) | p99 (ms) | ratio | baseline |");
    console.log("|---|---|---|---|---|---|");
    for (const r of results) {
      console.log(
        `| ${r.case} | ${r.rps} | ${(r.p50_us / 1000).toFixed(2)} | ${(r.p99_us / 1000).toFixed(2)} | ${r.ratio ?? "—"} | ${r.baseline ?? "—"} |`,
      );
    }
    const target = create.p50 <= 50_000 ? "meets" : "MISSES";
    console.log(`\nCreateTenant p50 ${(create.p50 / 1000).toFixed(1)} ms ${target} the 50 ms target.`);
    writeFileSync(join(import.meta.dirname, "results", "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await app.close();
    await testDb.close();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

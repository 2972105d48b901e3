// Starts a whole tenantd (stores, services, interceptors, one-port server) for a test file, on
// the backends the environment selects: real Postgres and Redis when DATABASE_URL and REDIS_URL
// are set, PGlite and the in-process bus otherwise. Time is a ManualClock, so expiry and grace
// boundaries are tested by moving the clock instead of sleeping.
import type { DescService } from "@bufbuild/protobuf";
import { type CallOptions, type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { expect } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import type { Tenant } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { type App, type AppOptions, createApp } from "../../src/app.js";
import { type Config, loadConfig } from "../../src/config.js";
import { ManualClock } from "../../src/domain/clock.js";
import type { Database } from "../../src/store/postgres/database.js";
import { createLogger } from "../../src/transport/logging.js";
import { openTestDatabase } from "./database.js";

export type Protocol = "grpc" | "connect" | "grpc-web";

const UNREACHABLE = { capacity: 1e12, refillPerSec: 1e12 };
export const UNREACHABLE_PLANS = {
  plans: Object.fromEntries(["free", "pro", "enterprise"].map((p) => [p, { key: UNREACHABLE, tenant: UNREACHABLE }])),
  owner: UNREACHABLE,
};
export const PROTOCOLS: Protocol[] = ["grpc", "connect", "grpc-web"];

export interface Harness {
  app: App;
  /** The app's database, for assertions the stores cannot make (e.g. that a schema is gone). */
  db: Database;
  clock: ManualClock;
  baseUrl: string;
  port: number;
  /** The bootstrap owner key (all permissions). */
  ownerKey: string;
  client<S extends DescService>(service: S, protocol?: Protocol): Client<S>;
  /** Call options carrying a bearer key and, optionally, `x-tenant-id`. */
  as(key: string, actAs?: string): CallOptions;
  /** The owner creates a tenant and a key holding every tenant permission. */
  newTenant(init?: { name?: string; permissions?: string[]; environment?: number }): Promise<{
    tenant: Tenant;
    key: string;
    keyId: string;
  }>;
  close(): Promise<void>;
}

export async function startHarness(
  overrides: Partial<Config> = {},
  appOptions: Pick<AppOptions, "benchTrustCallers"> = {},
): Promise<Harness> {
  const clock = new ManualClock(Date.now());
  const testDb = await openTestDatabase();
  const config: Config = {
    ...loadConfig({}),
    logLevel: "silent",
    redisUrl: process.env.REDIS_URL || undefined,
    databaseUrl: undefined,
    lastUsedFlushMs: 60_000,
    // The clock never moves by itself here, so buckets would never refill: tests that are not
    // about rate limits get limits they cannot reach. Rate-limit tests pass their own plans.
    rateLimitPlans: UNREACHABLE_PLANS,
    shutdownGraceMs: 1000,
    // Usage cycles run when a test calls app.usage.flush(), not on a timer.
    usageFlushMs: 0,
    ...overrides,
  };
  let bootstrapBanner = "";
  const app = await createApp(config, {
    ...appOptions,
    clock,
    database: testDb.db,
    log: createLogger("silent"),
    print: (t) => {
      bootstrapBanner += t;
    },
  });
  const { port } = await app.listen(0, "127.0.0.1");
  const baseUrl = `http://127.0.0.1:${port}`;
  const ownerKey = app.bootstrapKey;
  if (!ownerKey || !bootstrapBanner.includes(ownerKey)) throw new Error("bootstrap owner key was not printed");

  const transports = {
    grpc: createGrpcTransport({ baseUrl }),
    connect: createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  };
  const as = (key: string, actAs?: string): CallOptions => ({
    headers: { authorization: `Bearer ${key}`, ...(actAs ? { "x-tenant-id": actAs } : {}) },
  });
  const harness: Harness = {
    app,
    db: testDb.db,
    clock,
    baseUrl,
    port,
    ownerKey,
    client: (service, protocol = "connect") => createClient(service, transports[protocol]),
    as,
    async newTenant(init = {}) {
      const tenants = createClient(TenantService, transports.connect);
      const keys = createClient(KeyService, transports.connect);
      const { tenant } = await tenants.createTenant(
        {
          name: init.name ?? `Tenant ${Math.random().toString(36).slice(2, 8)}`,
          email: "admin@example.com",
          environment: init.environment ?? 0,
        },
        as(ownerKey),
      );
      if (!tenant) throw new Error("no tenant");
      const created = await keys.createKey(
        { tenantId: tenant.id, label: "test key", permissions: init.permissions ?? [] },
        as(ownerKey),
      );
      return { tenant, key: created.apiKey, keyId: created.key?.id ?? "" };
    },
    async close() {
      await app.close();
      await testDb.close();
    },
  };
  return harness;
}

/** Asserts that a call fails with the given code and ErrorInfo reason (domain "tenantd"). */
export async function expectError(p: Promise<unknown>, code: Code, reason: string): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    const err = ConnectError.from(e);
    const info = err.findDetails(ErrorInfoSchema)[0];
    expect({ code: Code[err.code], reason: info?.reason, domain: info?.domain }).toEqual({
      code: Code[code],
      reason,
      domain: "tenantd",
    });
    return err;
  }
  throw new Error(`expected ${Code[code]} ${reason}, but the call succeeded`);
}

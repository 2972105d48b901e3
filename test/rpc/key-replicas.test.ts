// Cross-replica cache invalidation: two tenantd apps ("replicas" A and B) on one Postgres database
// and one Redis, each with a 10-minute verification cache and a clock that never moves, so that
// nothing but an invalidation event can make B drop a cached key. B's cache is warmed, the key is
// revoked (or rotated, or its tenant suspended) on A, and B is polled until it refuses: the bound
// is 1 s, and the observed propagation time is printed.
//
// Meaningful only with a real Redis (the in-process bus of an app without REDIS_URL reaches no
// other process) and a shared database: skipped unless REDIS_URL and DATABASE_URL are both set.
import { performance } from "node:perf_hooks";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { type App, createApp } from "../../src/app.js";
import { type Config, loadConfig } from "../../src/config.js";
import { ManualClock } from "../../src/domain/clock.js";
import { parseKey } from "../../src/domain/key-format.js";
import type { Invalidation, InvalidationBus } from "../../src/services/invalidation.js";
import { createRedis, whenReady } from "../../src/store/redis/client.js";
import { createRedisInvalidationBus } from "../../src/store/redis/invalidation-bus.js";
import { createLogger } from "../../src/transport/logging.js";
import { expectError, type Protocol } from "../helpers/app.js";
import { openTestDatabase, type TestDatabase } from "../helpers/database.js";
import { KEY_PROTOCOLS } from "../helpers/keys.js";

const REAL_BACKENDS = Boolean(process.env.REDIS_URL && process.env.DATABASE_URL);
const BOUND_MS = 1000;
const CACHE_TTL_MS = 600_000;

interface Replica {
  app: App;
  keys: Record<Protocol, Client<typeof KeyService>>;
  tenants: Client<typeof TenantService>;
  /** Invalidation events this replica received, with the (real) time they arrived. */
  events: Array<{ event: Invalidation; at: number }>;
}

describe.skipIf(!REAL_BACKENDS)("cross-replica invalidation over Redis", () => {
  let db: TestDatabase;
  let a: Replica;
  let b: Replica;
  let ownerKey: string;
  const owner = () => ({ headers: { authorization: `Bearer ${ownerKey}` } });
  const as = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });

  async function replica(config: Config, clock: ManualClock): Promise<Replica> {
    const app = await createApp(config, { clock, database: db.db, log: createLogger("silent"), print: () => {} });
    const { port } = await app.listen(0, "127.0.0.1");
    const baseUrl = `http://127.0.0.1:${port}`;
    const events: Replica["events"] = [];
    app.bus.subscribe((event) => events.push({ event, at: performance.now() }));
    return {
      app,
      keys: {
        grpc: createClient(KeyService, createGrpcTransport({ baseUrl })),
        connect: createClient(KeyService, createConnectTransport({ baseUrl, httpVersion: "1.1" })),
        "grpc-web": createClient(KeyService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })),
      },
      tenants: createClient(TenantService, createConnectTransport({ baseUrl, httpVersion: "1.1" })),
      events,
    };
  }

  beforeAll(async () => {
    db = await openTestDatabase();
    const config: Config = {
      ...loadConfig({}),
      logLevel: "silent",
      redisUrl: process.env.REDIS_URL,
      databaseUrl: undefined,
      keyCacheTtlMs: CACHE_TTL_MS,
      lastUsedFlushMs: 60_000,
      shutdownGraceMs: 1000,
    };
    // One clock that never moves: cache entries cannot expire during the test.
    const clock = new ManualClock(Date.now());
    a = await replica(config, clock);
    b = await replica(config, clock);
    if (!a.app.bootstrapKey) throw new Error("replica A did not create the bootstrap key");
    expect(b.app.bootstrapKey).toBeUndefined(); // the database already had an owner key
    ownerKey = a.app.bootstrapKey;

    // Wait until B's subscription is live (it subscribes when its Redis connection is ready):
    // A publishes a probe event until B has received one.
    const probe = { kind: "key" as const, kid: `probe${Math.random().toString(36).slice(2)}` };
    const deadline = performance.now() + 5000;
    while (!b.events.some((e) => e.event.kind === "key" && e.event.kid === probe.kid)) {
      if (performance.now() > deadline) throw new Error("replica B never received an invalidation from A");
      await a.app.bus.publish(probe);
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  afterAll(async () => {
    await a?.app.close();
    await b?.app.close();
    await db?.close();
  });

  async function newTenantKey() {
    const { tenant } = await a.tenants.createTenant({ name: "Replicas", email: "r@example.com" }, owner());
    if (!tenant) throw new Error("no tenant");
    const res = await a.keys.connect.createKey({ tenantId: tenant.id, label: "replicated" }, owner());
    return { tenantId: tenant.id, apiKey: res.apiKey, keyId: res.key?.id ?? "" };
  }

  /**
   * Calls B until it refuses the key. Returns the refusal, when the refusing call started and when
   * it ended (ms after `since`), and how many calls it took.
   */
  async function pollUntilRefused(protocol: Protocol, apiKey: string, since: number) {
    let polls = 0;
    for (;;) {
      polls++;
      const started = performance.now() - since;
      try {
        await b.keys[protocol].listKeys({ pageSize: 1 }, as(apiKey));
      } catch (e) {
        return { err: ConnectError.from(e), startedMs: started, elapsedMs: performance.now() - since, polls };
      }
      if (performance.now() - since > BOUND_MS) {
        throw new Error(`replica B still accepted the key ${BOUND_MS} ms after A acknowledged (${polls} polls)`);
      }
      await new Promise((r) => setImmediate(r));
    }
  }

  /** When B received the invalidation of this key, in ms after `since` (negative: before), or null. */
  function eventDelay(kid: string, since: number): number | null {
    const e = b.events.find((x) => x.event.kind === "key" && x.event.kid === kid);
    return e ? e.at - since : null;
  }

  it("control: a key revoked in the database without an event stays accepted by B's cache", async () => {
    const k = await newTenantKey();
    await b.keys.grpc.listKeys({ pageSize: 1 }, as(k.apiKey));
    await b.keys.grpc.listKeys({ pageSize: 1 }, as(k.apiKey));
    await b.app.stores.keys.revoke(k.tenantId, parseKey(k.apiKey)?.kid ?? "", Date.now());
    // B answers from its 10-minute cache: the tests below see refusals only through the bus.
    await b.keys.grpc.listKeys({ pageSize: 1 }, as(k.apiKey));
    await expectError(a.keys.grpc.listKeys({ pageSize: 1 }, as(k.apiKey)), Code.Unauthenticated, "KEY_REVOKED");
  });

  describe.each(KEY_PROTOCOLS)("over %s", (protocol) => {
    it(`a key revoked on A is refused by B with KEY_REVOKED within ${BOUND_MS} ms`, async (ctx) => {
      const k = await newTenantKey();
      await b.keys[protocol].listKeys({ pageSize: 1 }, as(k.apiKey)); // warm B's cache
      await b.keys[protocol].listKeys({ pageSize: 1 }, as(k.apiKey));
      const sent = performance.now();
      await a.keys[protocol].revokeKey({ tenantId: k.tenantId, keyId: k.keyId }, owner());
      const acked = performance.now();
      const { err, startedMs, elapsedMs, polls } = await pollUntilRefused(protocol, k.apiKey, acked);
      expect(err.code).toBe(Code.Unauthenticated);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("KEY_REVOKED");
      const delay = eventDelay(parseKey(k.apiKey)?.kid ?? "", acked);
      expect(delay).not.toBeNull();
      const line =
        `[${protocol}] revoke propagation: B received the event ${delay?.toFixed(2)} ms after A acknowledged ` +
        `(revoke RPC: ${(acked - sent).toFixed(2)} ms); B refused on poll ${polls}, started ` +
        `${startedMs.toFixed(2)} ms and answered ${elapsedMs.toFixed(2)} ms after the acknowledgement`;
      console.log(line);
      ctx.annotate(line);
      expect(elapsedMs).toBeLessThanOrEqual(BOUND_MS);
    });

    it(`a key rotated on A with zero grace: B refuses the old secret (KEY_ROTATED) and accepts the new one`, async (ctx) => {
      const k = await newTenantKey();
      await b.keys[protocol].listKeys({ pageSize: 1 }, as(k.apiKey));
      const res = await a.keys[protocol].rotateKey(
        { tenantId: k.tenantId, keyId: k.keyId, gracePeriod: { seconds: 0n } },
        owner(),
      );
      const acked = performance.now();
      const { err, elapsedMs } = await pollUntilRefused(protocol, k.apiKey, acked);
      expect(err.code).toBe(Code.Unauthenticated);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("KEY_ROTATED");
      await b.keys[protocol].listKeys({ pageSize: 1 }, as(res.apiKey));
      const line = `[${protocol}] rotate propagation: B refused the old secret ${elapsedMs.toFixed(2)} ms after A acknowledged`;
      console.log(line);
      ctx.annotate(line);
    });

    it("a tenant suspended on A: B refuses its keys with TENANT_SUSPENDED", async () => {
      const k = await newTenantKey();
      await b.keys[protocol].listKeys({ pageSize: 1 }, as(k.apiKey));
      await a.tenants.updateTenant({ tenantId: k.tenantId, status: Tenant_Status.SUSPENDED }, owner());
      const { err } = await pollUntilRefused(protocol, k.apiKey, performance.now());
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("TENANT_SUSPENDED");
    });
  });
});

// Regression: app.ts awaits the publisher's connection while the subscriber connects; when the
// subscriber was ready first, the bus waited for a "ready" event that never came and the replica
// never subscribed, so it kept accepting revoked keys until its cache TTL ran out.
describe.skipIf(!process.env.REDIS_URL)("Redis invalidation bus", () => {
  it("a bus created over an already connected subscriber receives other replicas' events", async () => {
    const url = process.env.REDIS_URL ?? "";
    const conns = [0, 1, 2, 3].map((i) => createRedis({ url, timeoutMs: 500, name: `tenantd-test-${i}` }));
    const [pubA, subA, pubB, subB] = conns as [Redis, Redis, Redis, Redis];
    const buses: InvalidationBus[] = [];
    try {
      await Promise.all(conns.map((c) => whenReady(c, 5000)));
      const a = createRedisInvalidationBus({ publisher: pubA, subscriber: subA, onError: () => {} });
      const b = createRedisInvalidationBus({ publisher: pubB, subscriber: subB, onError: () => {} });
      buses.push(a, b);
      const received: Invalidation[] = [];
      b.subscribe((e) => received.push(e));
      const kid = `bus${Math.random().toString(36).slice(2)}`;
      const deadline = performance.now() + 2000;
      while (!received.some((e) => e.kind === "key" && e.kid === kid) && performance.now() < deadline) {
        await a.publish({ kind: "key", kid });
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(received).toContainEqual({ kind: "key", kid });
      // The subscription also dropped the whole cache once, as after any (re)subscription.
      expect(received).toContainEqual({ kind: "all" });
    } finally {
      for (const bus of buses) await bus.close();
      for (const c of conns) c.disconnect();
    }
  });
});

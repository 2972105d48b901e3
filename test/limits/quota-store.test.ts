// The usage counters behind LimitService, run against both implementations of the QuotaStore
// port (in process always; Redis when REDIS_URL is set): the atomic check-and-track never lets
// two callers take the last unit, tracking counts past a BLOCK limit, reservations hold, commit,
// release and expire by themselves, and request ids decide a call once. Time is passed in by the
// caller (`now`), so expiry is tested by moving a number, not by sleeping.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CounterSpec, QuotaStore } from "../../src/store/limit-ports.js";
import { createMemoryQuotaStore } from "../../src/store/memory/quota-store.js";
import { createRedis, whenReady } from "../../src/store/redis/client.js";
import { createRedisQuotaStore } from "../../src/store/redis/quota-store.js";
import { freshTenant, REDIS_URL } from "./helpers.js";

const T0 = Date.UTC(2026, 5, 1, 12);
const DAY = 24 * 3_600_000;

const spec = (id: string, limit: number, block = true): CounterSpec => ({ id, limit, block, expireAtMs: T0 + DAY });
const idem = (requestId: string, hash: string) => ({ requestId, hash, ttlMs: DAY });

interface StoreCase {
  name: string;
  skip: string | undefined;
  make(): Promise<QuotaStore>;
}

const CASES: StoreCase[] = [
  { name: "memory", skip: undefined, make: async () => createMemoryQuotaStore() },
  {
    name: "redis",
    skip: REDIS_URL ? undefined : "REDIS_URL is not set",
    make: async () => {
      const redis = createRedis({ url: REDIS_URL as string, timeoutMs: 2000, name: "tenantd-test-quota" });
      redis.on("error", () => {});
      await whenReady(redis, 5000);
      return createRedisQuotaStore({ redis, ownsConnection: true });
    },
  },
];

for (const c of CASES) {
  describe.skipIf(c.skip !== undefined)(`QuotaStore (${c.name})`, () => {
    let store: QuotaStore;
    beforeAll(async () => {
      store = await c.make();
    });
    afterAll(async () => {
      await store?.close();
    });

    describe("consume (atomic check-and-track)", () => {
      it("100 concurrent consumes against a limit of 10: exactly 10 allowed, the counter ends at 10", async () => {
        const t = freshTenant();
        const s = [spec("api:calls:day:t:1", 10)];
        const outs = await Promise.all(Array.from({ length: 100 }, () => store.consume(t, s, 1, T0)));
        const allowed = outs.filter((o) => o.kind === "done" && o.allowed).length;
        expect(allowed).toBe(10);
        expect(await store.check(t, s, T0)).toEqual([{ used: 10, reserved: 0 }]);
      });

      it("amounts larger than 1 never overshoot either (200 concurrent consumes of 3 against 100)", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 100)];
        const outs = await Promise.all(Array.from({ length: 200 }, () => store.consume(t, s, 3, T0)));
        expect(outs.filter((o) => o.kind === "done" && o.allowed)).toHaveLength(33);
        expect((await store.check(t, s, T0))[0]?.used).toBe(99);
      });

      it("several counters move together: one BLOCK counter refusing means none is counted", async () => {
        const t = freshTenant();
        const s = [spec("a:c:day:t:1", 100), spec("a:c:day:u:alice:1", 2), spec("a:c:month:t:1", 1000, false)];
        for (let i = 0; i < 2; i++) expect(await store.consume(t, s, 1, T0)).toMatchObject({ allowed: true });
        const refused = await store.consume(t, s, 1, T0);
        expect(refused).toMatchObject({ kind: "done", allowed: false });
        expect(await store.check(t, s, T0)).toEqual([
          { used: 2, reserved: 0 },
          { used: 2, reserved: 0 },
          { used: 2, reserved: 0 },
        ]);
      });

      it("WARN counters and unlimited (-1) counters never refuse", async () => {
        const t = freshTenant();
        const s = [spec("w:c:day:t:1", 1, false), spec("u:c:day:t:1", -1)];
        for (let i = 0; i < 5; i++) expect(await store.consume(t, s, 1, T0)).toMatchObject({ allowed: true });
        expect((await store.check(t, s, T0)).map((x) => x.used)).toEqual([5, 5]);
      });

      it("counters of other tenants are separate", async () => {
        const [a, b] = [freshTenant(), freshTenant()];
        const s = [spec("x:c:day:t:1", 1)];
        expect(await store.consume(a, s, 1, T0)).toMatchObject({ allowed: true });
        expect(await store.consume(b, s, 1, T0)).toMatchObject({ allowed: true });
        expect(await store.consume(a, s, 1, T0)).toMatchObject({ allowed: false });
      });
    });

    describe("track", () => {
      it("counts even past a BLOCK limit", async () => {
        const t = freshTenant();
        const s = [spec("x:c:day:t:1", 2)];
        for (let i = 0; i < 5; i++) await store.track(t, s, 1, T0);
        expect(await store.check(t, s, T0)).toEqual([{ used: 5, reserved: 0 }]);
      });

      it("a request id counts once; the same id with another body is a conflict", async () => {
        const t = freshTenant();
        const s = [spec("x:c:day:t:1", 100)];
        const first = await store.track(t, s, 7, T0, idem("r1", "h1"));
        const again = await store.track(t, s, 7, T0, idem("r1", "h1"));
        expect(first).toMatchObject({ kind: "done", duplicate: false, states: [{ used: 7, reserved: 0 }] });
        expect(again).toMatchObject({ kind: "done", duplicate: true, states: [{ used: 7, reserved: 0 }] });
        expect(await store.track(t, s, 8, T0, idem("r1", "h2"))).toEqual({ kind: "conflict" });
        expect((await store.check(t, s, T0))[0]?.used).toBe(7);
      });

      it("50 concurrent retries of one request id count once", async () => {
        const t = freshTenant();
        const s = [spec("x:c:day:t:1", 100)];
        const outs = await Promise.all(Array.from({ length: 50 }, () => store.consume(t, s, 1, T0, idem("same", "h"))));
        expect(outs.filter((o) => o.kind === "done" && !o.duplicate)).toHaveLength(1);
        expect((await store.check(t, s, T0))[0]?.used).toBe(1);
      });
    });

    describe("reservations", () => {
      const init = (id: string, ttlMs = 60_000) => ({ id, userId: "alice", resource: "llm", metric: "tokens", ttlMs });

      it("a hold counts against the limit until committed with the actual amount", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 100)];
        const r = await store.reserve(t, s, 60, init("rsv_a"), T0);
        expect(r).toMatchObject({ kind: "done", allowed: true, reservationId: "rsv_a", expiresAtMs: T0 + 60_000 });
        expect(await store.check(t, s, T0)).toEqual([{ used: 0, reserved: 60 }]);
        // 60 held: 50 more does not fit, 40 does.
        expect(await store.consume(t, s, 50, T0)).toMatchObject({ allowed: false });
        expect(await store.reserve(t, s, 50, init("rsv_b"), T0)).toMatchObject({ allowed: false, reservationId: "" });

        const done = await store.commit(t, "rsv_a", 45, T0 + 1000);
        expect(done).toMatchObject({
          kind: "ok",
          reservation: { state: "committed", committedAmount: 45, amount: 60 },
        });
        expect(await store.check(t, s, T0 + 1000)).toEqual([{ used: 45, reserved: 0 }]);
        // Idempotent with the same amount; another amount is a conflict.
        expect(await store.commit(t, "rsv_a", 45, T0 + 2000)).toMatchObject({ kind: "ok" });
        expect(await store.commit(t, "rsv_a", 46, T0 + 2000)).toMatchObject({ kind: "state_conflict" });
        expect(await store.release(t, "rsv_a", T0 + 2000)).toMatchObject({ kind: "state_conflict" });
        expect((await store.check(t, s, T0 + 2000))[0]?.used).toBe(45);
      });

      it("a commit above the hold counts in full, even past the limit", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 100)];
        await store.reserve(t, s, 90, init("rsv_c"), T0);
        await store.commit(t, "rsv_c", 130, T0);
        expect(await store.check(t, s, T0)).toEqual([{ used: 130, reserved: 0 }]);
      });

      it("release removes the hold and counts nothing; releasing again answers the same", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 100)];
        await store.reserve(t, s, 70, init("rsv_d"), T0);
        expect(await store.release(t, "rsv_d", T0 + 5)).toMatchObject({
          kind: "ok",
          reservation: { state: "released", finishedAtMs: T0 + 5 },
        });
        expect(await store.release(t, "rsv_d", T0 + 6)).toMatchObject({ kind: "ok" });
        expect(await store.commit(t, "rsv_d", 1, T0 + 6)).toMatchObject({ kind: "state_conflict" });
        expect(await store.check(t, s, T0 + 6)).toEqual([{ used: 0, reserved: 0 }]);
      });

      it("an expired hold is released by itself at its expiry, by whatever call comes next", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 100)];
        await store.reserve(t, s, 100, init("rsv_e", 30_000), T0);
        expect(await store.consume(t, s, 1, T0 + 29_999)).toMatchObject({ allowed: false });
        // At the expiry instant the hold is gone: the next consume fits.
        expect(await store.consume(t, s, 1, T0 + 30_000)).toMatchObject({ allowed: true });
        expect(await store.check(t, s, T0 + 30_000)).toEqual([{ used: 1, reserved: 0 }]);
        expect(await store.getReservation(t, "rsv_e", T0 + 30_000)).toMatchObject({
          state: "expired",
          finishedAtMs: T0 + 30_000,
        });
        expect(await store.commit(t, "rsv_e", 10, T0 + 30_001)).toMatchObject({ kind: "state_conflict" });
      });

      it("concurrent reserves never hold more than the limit", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 1000)];
        const outs = await Promise.all(
          Array.from({ length: 60 }, (_, i) => store.reserve(t, s, 100, init(`rsv_p${i}`), T0)),
        );
        expect(outs.filter((o) => o.kind === "done" && o.allowed)).toHaveLength(10);
        expect(await store.check(t, s, T0)).toEqual([{ used: 0, reserved: 1000 }]);
      });

      it("a reserve retried with its request id returns the first reservation", async () => {
        const t = freshTenant();
        const s = [spec("llm:tokens:day:t:1", 1000)];
        const a = await store.reserve(t, s, 10, init("rsv_first"), T0, idem("q1", "h"));
        const b = await store.reserve(t, s, 10, init("rsv_second"), T0, idem("q1", "h"));
        expect(a).toMatchObject({ reservationId: "rsv_first", duplicate: false });
        expect(b).toMatchObject({ reservationId: "rsv_first", duplicate: true });
        expect(await store.check(t, s, T0)).toEqual([{ used: 0, reserved: 10 }]);
      });

      it("unknown reservations are not found, also for ids another tenant holds", async () => {
        const [a, b] = [freshTenant(), freshTenant()];
        await store.reserve(a, [spec("x:c:day:t:1", 10)], 1, init("rsv_mine"), T0);
        expect(await store.commit(b, "rsv_mine", 1, T0)).toEqual({ kind: "not_found" });
        expect(await store.release(b, "rsv_nope", T0)).toEqual({ kind: "not_found" });
        expect(await store.getReservation(b, "rsv_mine", T0)).toBeNull();
      });
    });
  });
}

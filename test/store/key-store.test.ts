// KeyStore contract on the selected backend: scoping by tenant, pagination, revoke, rotate and
// the monotonic last-used batch.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TenantRecord } from "../../src/domain/types.js";
import type { Stores } from "../../src/store/ports.js";
import { coalesceTouches } from "../../src/store/postgres/key-store.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeKey, makeTenant, T0, uniqueSuffix } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

describe(`KeyStore (${backend})`, () => {
  let tdb: TestDatabase;
  let stores: Stores;

  beforeAll(async () => {
    tdb = await openTestDatabase();
    stores = tdb.stores;
  });
  afterAll(async () => {
    await tdb?.close();
  });

  async function newTenant(over: Partial<TenantRecord> = {}): Promise<TenantRecord> {
    const t = makeTenant(over);
    expect((await stores.tenants.create(t)).kind).toBe("created");
    return t;
  }

  // Runs first, while this file's database holds no owner key yet.
  it("anyOwnerKey is false on an empty store and true once an owner key exists", async () => {
    expect(await stores.keys.anyOwnerKey()).toBe(false);
    const t = await newTenant();
    await stores.keys.insert(makeKey(t.id));
    expect(await stores.keys.anyOwnerKey()).toBe(false);
    await stores.keys.insert(makeKey(null, { revokedAt: T0 }));
    expect(await stores.keys.anyOwnerKey()).toBe(true);
  });

  describe("insert and credential", () => {
    it("round-trips every field and reports the tenant's status", async () => {
      const t = await newTenant();
      const key = makeKey(t.id, {
        permissions: ["keys:read", "audit:read"],
        expiresAt: T0 + 10,
        lastUsedAt: T0 + 1,
        rotatedAt: T0 + 2,
        prevHash: "ab".repeat(32),
        prevValidUntil: T0 + 3,
        prevLastUsedAt: T0 + 4,
      });
      await stores.keys.insert(key);
      expect(await stores.keys.credential(key.kid)).toEqual({ key, tenantStatus: "active" });
      await stores.tenants.update(t.id, { status: "suspended" }, T0);
      expect((await stores.keys.credential(key.kid))?.tenantStatus).toBe("suspended");
    });

    it("gives owner keys a null tenant status and unknown kids null", async () => {
      const owner = makeKey(null);
      await stores.keys.insert(owner);
      expect(await stores.keys.credential(owner.kid)).toEqual({ key: owner, tenantStatus: null });
      expect(await stores.keys.credential("doesnotexist0000")).toBeNull();
    });
  });

  describe("scoping", () => {
    it("never returns a key outside the asked scope", async () => {
      const a = await newTenant();
      const b = await newTenant();
      const ka = makeKey(a.id);
      const kb = makeKey(b.id);
      const ko = makeKey(null);
      for (const k of [ka, kb, ko]) await stores.keys.insert(k);
      const scopes = [a.id, b.id, null] as const;
      const keys = [ka, kb, ko];
      // Every (scope, key) pair: found only in its own scope, for get, revoke and rotate alike.
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...scopes), fc.constantFrom(...keys), async (scope, key) => {
          const own = key.tenantId === scope;
          expect((await stores.keys.get(scope, key.kid)) !== null).toBe(own);
          if (!own) {
            expect(await stores.keys.revoke(scope, key.kid, T0)).toBeNull();
            expect(
              await stores.keys.rotate(scope, key.kid, { hash: "x", lastFour: "xxxx", at: T0, prevValidUntil: T0 }),
            ).toBeNull();
          }
        }),
        { numRuns: 30 },
      );
      // The failed revokes and rotations changed nothing.
      for (const k of keys) expect(await stores.keys.get(k.tenantId, k.kid)).toEqual(k);
    });
  });

  describe("list", () => {
    it("pages by (createdAt desc, kid desc) and hides revoked keys unless asked", async () => {
      const t = await newTenant();
      const made = [];
      for (let i = 0; i < 7; i++) {
        const k = makeKey(t.id, { createdAt: T0 + Math.floor(i / 2), revokedAt: i === 3 ? T0 + 100 : null });
        await stores.keys.insert(k);
        made.push(k);
      }
      const order = [...made].sort((x, y) => y.createdAt - x.createdAt || (x.kid < y.kid ? 1 : -1));
      const all = [];
      let after: { t: number; id: string } | undefined;
      for (;;) {
        const page = await stores.keys.list({
          tenantId: t.id,
          includeRevoked: true,
          limit: 2,
          ...(after ? { after } : {}),
        });
        all.push(...page);
        if (page.length < 2) break;
        const last = page[page.length - 1]!;
        // The record id form is accepted as a position too.
        after = { t: last.createdAt, id: `key_${last.kid}` };
      }
      expect(all.map((k) => k.kid)).toEqual(order.map((k) => k.kid));
      const active = await stores.keys.list({ tenantId: t.id, includeRevoked: false, limit: 100 });
      expect(active.map((k) => k.kid)).toEqual(order.filter((k) => k.revokedAt === null).map((k) => k.kid));
    });

    it("lists owner keys for a null tenant and never tenant keys", async () => {
      const owners = await stores.keys.list({ tenantId: null, includeRevoked: true, limit: 100 });
      expect(owners.length).toBeGreaterThan(0);
      expect(owners.every((k) => k.tenantId === null && k.kind === "owner")).toBe(true);
    });
  });

  describe("revoke", () => {
    it("sets revokedAt once; a second revoke keeps the first time", async () => {
      const t = await newTenant();
      const k = makeKey(t.id);
      await stores.keys.insert(k);
      expect((await stores.keys.revoke(t.id, k.kid, T0 + 50))?.revokedAt).toBe(T0 + 50);
      expect((await stores.keys.revoke(t.id, k.kid, T0 + 99))?.revokedAt).toBe(T0 + 50);
    });
  });

  describe("rotate", () => {
    it("keeps the old hash as prevHash until prevValidUntil and moves its last use with it", async () => {
      const t = await newTenant();
      const k = makeKey(t.id, { lastUsedAt: T0 + 7 });
      await stores.keys.insert(k);
      const r = await stores.keys.rotate(t.id, k.kid, {
        hash: "cd".repeat(32),
        lastFour: "9999",
        at: T0 + 10,
        prevValidUntil: T0 + 20,
      });
      expect(r).toEqual({
        ...k,
        hash: "cd".repeat(32),
        lastFour: "9999",
        rotatedAt: T0 + 10,
        prevHash: k.hash,
        prevValidUntil: T0 + 20,
        prevLastUsedAt: T0 + 7,
        lastUsedAt: null,
      });
    });
  });

  describe("touch", () => {
    it("lets later times win in any order, for the current and the previous secret", async () => {
      const t = await newTenant();
      const k1 = makeKey(t.id);
      const k2 = makeKey(t.id);
      await stores.keys.insert(k1);
      await stores.keys.insert(k2);
      await stores.keys.touch([
        { kid: k1.kid, at: T0 + 300, previous: false },
        { kid: k1.kid, at: T0 + 100, previous: false },
        { kid: k2.kid, at: T0 + 50, previous: true },
      ]);
      // A late flush carrying earlier times changes nothing.
      await stores.keys.touch([
        { kid: k1.kid, at: T0 + 200, previous: false },
        { kid: k2.kid, at: T0 + 10, previous: true },
        { kid: "unknownkid000000", at: T0, previous: false },
      ]);
      const a = await stores.keys.get(t.id, k1.kid);
      const b = await stores.keys.get(t.id, k2.kid);
      expect([a?.lastUsedAt, a?.prevLastUsedAt]).toEqual([T0 + 300, null]);
      expect([b?.lastUsedAt, b?.prevLastUsedAt]).toEqual([null, T0 + 50]);
      await stores.keys.touch([{ kid: k2.kid, at: T0 + 400, previous: false }]);
      expect((await stores.keys.get(t.id, k2.kid))?.lastUsedAt).toBe(T0 + 400);
      await stores.keys.touch([]);
    });

    it("folds a batch to the maximum per kid and secret", () => {
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              kid: fc.constantFrom("a", "b", "c"),
              at: fc.integer({ min: 0, max: 1e12 }),
              previous: fc.boolean(),
            }),
          ),
          (updates) => {
            const folded = coalesceTouches(updates);
            expect(new Set(folded.map((f) => f.kid)).size).toBe(folded.length);
            for (const f of folded) {
              const cur = updates.filter((u) => u.kid === f.kid && !u.previous).map((u) => u.at);
              const prev = updates.filter((u) => u.kid === f.kid && u.previous).map((u) => u.at);
              expect(f.at).toBe(cur.length ? new Date(Math.max(...cur)).toISOString() : null);
              expect(f.prev_at).toBe(prev.length ? new Date(Math.max(...prev)).toISOString() : null);
            }
          },
        ),
      );
    });
  });

  describe("countActiveOwnerKeys", () => {
    it("counts owner keys holding the permission that are neither revoked nor expired", async () => {
      const perm = `perm-${uniqueSuffix()}`;
      const now = T0 + 1000;
      const t = await newTenant();
      await stores.keys.insert(makeKey(null, { permissions: [perm, "other"] }));
      await stores.keys.insert(makeKey(null, { permissions: [perm], expiresAt: now + 1 }));
      await stores.keys.insert(makeKey(null, { permissions: [perm], expiresAt: now }));
      await stores.keys.insert(makeKey(null, { permissions: [perm], revokedAt: T0 }));
      await stores.keys.insert(makeKey(null, { permissions: ["other"] }));
      await stores.keys.insert(makeKey(t.id, { permissions: [perm] }));
      expect(await stores.keys.countActiveOwnerKeys(perm, now)).toBe(2);
    });
  });
});

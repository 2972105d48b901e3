// Tenant isolation on every built RPC: tenant A's keys never read, list or change tenant B's
// data. Cross-tenant lookups answer NOT_FOUND exactly as for ids that do not exist (no
// PERMISSION_DENIED that would reveal existence), B's data is unchanged afterwards, and a
// randomized run of cross-tenant id substitutions finds no leak.
import { type DescMessage, toJson } from "@bufbuild/protobuf";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { type Key, KeySchema } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { TenantSchema } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId } from "../../src/domain/ids.js";
import { generateKey, keyIdOf } from "../../src/domain/key-format.js";
import { type Harness, type Protocol, startHarness } from "../helpers/app.js";

interface Party {
  id: string;
  /** API keys (all tenant permissions) and their ids; keys[0] is the one the harness made. */
  keys: Array<{ apiKey: string; keyId: string }>;
}

let h: Harness;
let A: Party;
let B: Party;

/** A well-formed key id that names no key. */
const unknownKeyId = () => keyIdOf(generateKey("tenant", "test").kid);

async function party(h: Harness, extraKeys: number): Promise<Party> {
  const t = await h.newTenant();
  const p: Party = { id: t.tenant.id, keys: [{ apiKey: t.key, keyId: t.keyId }] };
  for (let i = 0; i < extraKeys; i++) {
    const k = await h.client(KeyService).createKey({ tenantId: p.id, label: `key ${i}` }, h.as(h.ownerKey));
    p.keys.push({ apiKey: k.apiKey, keyId: k.key?.id ?? "" });
  }
  return p;
}

/** Everything the owner sees of a tenant: its record and all its keys (last-used times aside). */
async function snapshot(tenantId: string): Promise<unknown> {
  const owner = h.as(h.ownerKey);
  const { tenant } = await h.client(TenantService).getTenant({ tenantId }, owner);
  const { keys } = await h.client(KeyService).listKeys({ tenantId, includeRevoked: true, pageSize: 100 }, owner);
  const key = (k: Key) => {
    const j = toJson(KeySchema, k) as Record<string, unknown>;
    delete j.lastUsedTime;
    return j;
  };
  return { tenant: tenant && toJson(TenantSchema, tenant), keys: keys.map(key) };
}

interface Outcome {
  ok: boolean;
  code: string;
  reason: string;
  message: string;
  metadata: Record<string, string>;
  details: string[];
  /** Every byte of the answer, as text, to look for ids that must not be there. */
  text: string;
}

async function outcome(p: Promise<{ $typeName: string }>, schema?: DescMessage): Promise<Outcome> {
  try {
    const res = await p;
    const text = schema
      ? JSON.stringify(toJson(schema, res as never))
      : JSON.stringify(res, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
    return { ok: true, code: "OK", reason: "", message: "", metadata: {}, details: [], text };
  } catch (e) {
    const err = ConnectError.from(e);
    const info = err.findDetails(ErrorInfoSchema)[0];
    const details = err.details.map((d) => ("desc" in d ? d.desc.typeName : d.type));
    const metadata = { ...(info?.metadata ?? {}) };
    return {
      ok: false,
      code: Code[err.code],
      reason: info?.reason ?? "",
      message: err.rawMessage,
      metadata,
      details,
      text: JSON.stringify({ m: err.rawMessage, md: metadata, r: info?.reason }),
    };
  }
}

/** An outcome with the given ids replaced by a placeholder, to compare answers' shapes. */
function shape(o: Outcome, ids: string[]) {
  const scrub = (s: string) => ids.reduce((acc, id) => acc.split(id).join("<id>"), s);
  return {
    ok: o.ok,
    code: o.code,
    reason: o.reason,
    message: scrub(o.message),
    metadata: Object.fromEntries(Object.entries(o.metadata).map(([k, v]) => [k, scrub(v)])),
    details: o.details,
  };
}

beforeAll(async () => {
  h = await startHarness();
  A = await party(h, 1);
  B = await party(h, 2);
}, 60_000);

afterAll(async () => {
  await h?.close();
});

const PROTOCOLS: Protocol[] = ["grpc", "connect"];

describe.each(PROTOCOLS)("tenant A against tenant B over %s", (protocol) => {
  it("every cross-tenant KeyService call answers NOT_FOUND, and B is unchanged", async () => {
    const keys = h.client(KeyService, protocol);
    const a = h.as(A.keys[0]?.apiKey ?? "");
    const bKey = B.keys[1]?.keyId ?? "";
    const before = await snapshot(B.id);
    const cases: Array<[string, () => Promise<{ $typeName: string }>, string]> = [];
    for (const keyId of B.keys.map((k) => k.keyId)) {
      for (const tenantId of ["", A.id, B.id]) {
        const reason = tenantId === B.id ? "TENANT_NOT_FOUND" : "KEY_NOT_FOUND";
        const label = `(${tenantId === "" ? "own" : tenantId === A.id ? "A" : "B"}, B's ${keyId})`;
        cases.push([`GetKey${label}`, () => keys.getKey({ tenantId, keyId }, a), reason]);
        cases.push([`RevokeKey${label}`, () => keys.revokeKey({ tenantId, keyId }, a), reason]);
        cases.push([`RotateKey${label}`, () => keys.rotateKey({ tenantId, keyId }, a), reason]);
      }
    }
    // A's own key under B's tenant id.
    const aKey = A.keys[1]?.keyId ?? "";
    cases.push(["GetKey(B, A's key)", () => keys.getKey({ tenantId: B.id, keyId: aKey }, a), "TENANT_NOT_FOUND"]);
    cases.push(["RevokeKey(B, A's key)", () => keys.revokeKey({ tenantId: B.id, keyId: aKey }, a), "TENANT_NOT_FOUND"]);
    cases.push(["ListKeys(B)", () => keys.listKeys({ tenantId: B.id }, a), "TENANT_NOT_FOUND"]);
    cases.push([
      "ListKeys(B, revoked)",
      () => keys.listKeys({ tenantId: B.id, includeRevoked: true }, a),
      "TENANT_NOT_FOUND",
    ]);
    cases.push(["CreateKey(B)", () => keys.createKey({ tenantId: B.id, label: "x" }, a), "TENANT_NOT_FOUND"]);
    cases.push([
      "CreateKey(B, narrow)",
      () => keys.createKey({ tenantId: B.id, label: "x", permissions: ["keys:read"] }, a),
      "TENANT_NOT_FOUND",
    ]);

    const got = await Promise.all(cases.map(async ([name, fn, reason]) => ({ name, reason, o: await outcome(fn()) })));
    const wrong = got
      .filter(({ o, reason }) => o.code !== "NotFound" || o.reason !== reason)
      .map(({ name, reason, o }) => `${name}: expected NotFound ${reason}, got ${o.code} ${o.reason}`);
    expect(wrong).toEqual([]);
    expect(bKey).not.toBe("");
    expect(await snapshot(B.id)).toEqual(before);
  });

  it("A's key cannot reach B through TenantService, and the answer does not depend on B existing", async () => {
    const tenants = h.client(TenantService, protocol);
    const keys = h.client(KeyService, protocol);
    const aKey = A.keys[0]?.apiKey ?? "";
    const a = h.as(aKey);
    const ghost = newId("ten");
    const before = await snapshot(B.id);
    // Pairs: the call against B, and the same call against a tenant that does not exist.
    const pairs: Array<[string, (id: string) => Promise<{ $typeName: string }>]> = [
      ["GetCurrentTenant x-tenant-id", (id) => tenants.getCurrentTenant({}, h.as(aKey, id))],
      ["UpdateCurrentTenant x-tenant-id", (id) => tenants.updateCurrentTenant({ name: "taken over" }, h.as(aKey, id))],
      ["DeleteCurrentTenant x-tenant-id", (id) => tenants.deleteCurrentTenant({}, h.as(aKey, id))],
      ["UpdateCurrentTenant id", (id) => tenants.updateCurrentTenant({ id, name: "taken over" }, a)],
      ["GetTenant", (id) => tenants.getTenant({ tenantId: id }, a)],
      ["UpdateTenant", (id) => tenants.updateTenant({ tenantId: id, name: "taken over" }, a)],
      ["DeleteTenant", (id) => tenants.deleteTenant({ tenantId: id }, a)],
      ["ListKeys x-tenant-id", (id) => keys.listKeys({}, h.as(aKey, id))],
      ["CreateKey x-tenant-id", (id) => keys.createKey({ label: "x" }, h.as(aKey, id))],
    ];
    for (const [name, fn] of pairs) {
      const real = await outcome(fn(B.id));
      const none = await outcome(fn(ghost));
      expect(real.ok, `${name} succeeded against B`).toBe(false);
      expect(shape(real, [B.id]), name).toEqual(shape(none, [ghost]));
    }
    // VerifyKey is owner-only; B's real key and a made-up one get the same refusal.
    const bApiKey = B.keys[0]?.apiKey ?? "";
    const ghostKey = generateKey("tenant", "test").apiKey;
    expect(shape(await outcome(keys.verifyKey({ apiKey: bApiKey }, a)), [bApiKey])).toEqual(
      shape(await outcome(keys.verifyKey({ apiKey: ghostKey }, a)), [ghostKey]),
    );
    // A's current tenant is A, whatever it does.
    const cur = await tenants.getCurrentTenant({}, a);
    expect(cur.tenant?.id).toBe(A.id);
    const listed = await keys.listKeys({ includeRevoked: true }, a);
    expect(listed.keys.every((k) => k.tenantId === A.id)).toBe(true);
    expect(listed.keys.map((k) => k.id)).not.toContain(B.keys[0]?.keyId);
    expect(await snapshot(B.id)).toEqual(before);
  });

  it("NOT_FOUND for another tenant's real key is identical to the one for a key that does not exist", async () => {
    const keys = h.client(KeyService, protocol);
    const a = h.as(A.keys[0]?.apiKey ?? "");
    const real = B.keys[1]?.keyId ?? "";
    const ghost = unknownKeyId();
    const ghostTenant = newId("ten");
    const calls: Array<[string, (t: string, k: string) => Promise<{ $typeName: string }>]> = [
      ["GetKey", (tenantId, keyId) => keys.getKey({ tenantId, keyId }, a)],
      ["RevokeKey", (tenantId, keyId) => keys.revokeKey({ tenantId, keyId }, a)],
      ["RotateKey", (tenantId, keyId) => keys.rotateKey({ tenantId, keyId }, a)],
    ];
    for (const [name, fn] of calls) {
      // Another tenant's real key vs. a key id that names nothing, in the caller's own tenant.
      const r = shape(await outcome(fn("", real)), [real]);
      expect(r).toMatchObject({ code: "NotFound", reason: "KEY_NOT_FOUND" });
      expect(shape(await outcome(fn("", ghost)), [ghost]), name).toEqual(r);
      expect(shape(await outcome(fn(A.id, real)), [real]), name).toEqual(r);
      // A malformed key id answers the same too.
      expect(shape(await outcome(fn("", "key_nope")), ["key_nope"]), name).toEqual(r);
      // Another tenant's real id vs. a tenant that does not exist.
      const t = shape(await outcome(fn(B.id, real)), [B.id]);
      expect(t).toMatchObject({ code: "NotFound", reason: "TENANT_NOT_FOUND" });
      expect(shape(await outcome(fn(ghostTenant, real)), [ghostTenant]), name).toEqual(t);
      expect(shape(await outcome(fn(ghostTenant, ghost)), [ghostTenant]), name).toEqual(t);
    }
    const list = shape(await outcome(keys.listKeys({ tenantId: B.id }, a)), [B.id]);
    expect(shape(await outcome(keys.listKeys({ tenantId: ghostTenant }, a)), [ghostTenant])).toEqual(list);
  });
});

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with ISOLATION_SEED. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("randomized cross-tenant id substitutions", () => {
  const N = 2_000;

  it(`${N} substitutions over a pool of 5 tenants × 3 keys leak nothing`, async () => {
    const seed = Number(process.env.ISOLATION_SEED) || Math.floor(Math.random() * 2 ** 31);
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;

    const pool: Party[] = [];
    for (let i = 0; i < 5; i++) pool.push(await party(h, 2));
    const before = await Promise.all(pool.map((p) => snapshot(p.id)));

    type Rpc = "GetKey" | "RevokeKey" | "RotateKey" | "ListKeys" | "CreateKey";
    const RPCS: Rpc[] = ["GetKey", "RevokeKey", "RotateKey", "ListKeys", "CreateKey"];
    const clients = {
      grpc: h.client(KeyService, "grpc"),
      connect: h.client(KeyService, "connect"),
      "grpc-web": h.client(KeyService, "grpc-web"),
    };
    const leaks: string[] = [];
    const wrong: string[] = [];
    const tally = new Map<string, number>();

    const one = async (n: number) => {
      const i = Math.floor(rnd() * pool.length);
      let j = Math.floor(rnd() * (pool.length - 1));
      if (j >= i) j++;
      const me = pool[i] as Party;
      const victim = pool[j] as Party;
      const protocol = pick(["grpc", "connect", "grpc-web"] as const);
      const rpc = pick(RPCS);
      const caller = pick(me.keys);
      let tenantId: string;
      let keyId = "";
      if (rpc === "ListKeys" || rpc === "CreateKey") {
        tenantId = victim.id;
      } else {
        const mode = pick(["victim/victim", "own/victim", "mine/victim", "victim/mine"] as const);
        tenantId = mode.startsWith("victim") ? victim.id : mode.startsWith("mine") ? me.id : "";
        keyId = (mode.endsWith("victim") ? pick(victim.keys) : pick(me.keys)).keyId;
      }
      const c = clients[protocol];
      const opts: CallOptions = { ...h.as(caller.apiKey), timeoutMs: 15_000 };
      const p =
        rpc === "GetKey"
          ? c.getKey({ tenantId, keyId }, opts)
          : rpc === "RevokeKey"
            ? c.revokeKey({ tenantId, keyId }, opts)
            : rpc === "RotateKey"
              ? c.rotateKey({ tenantId, keyId }, opts)
              : rpc === "ListKeys"
                ? c.listKeys({ tenantId, includeRevoked: rnd() < 0.5 }, opts)
                : c.createKey({ tenantId, label: `sub ${n}` }, opts);
      const o = await outcome(p);
      const label = `#${n} ${protocol} ${rpc}(tenant_id=${tenantId || '""'}, key_id=${keyId || '""'}) by ${me.id}`;
      tally.set(`${o.code} ${o.reason}`, (tally.get(`${o.code} ${o.reason}`) ?? 0) + 1);
      // A leak: success, or any id of the victim's (or any other tenant's) data the request did
      // not itself carry.
      const secrets = pool
        .filter((p) => p !== me)
        .flatMap((p) => [p.id, ...p.keys.flatMap((k) => [k.keyId, k.apiKey, k.apiKey.slice(-4)])])
        .filter((s) => s !== tenantId && s !== keyId && s.length > 4);
      const shown = secrets.filter((s) => o.text.includes(s));
      if (o.ok || shown.length > 0) leaks.push(`${label}: ${o.code} ${o.text.slice(0, 200)} shows ${shown.join(",")}`);
      const expected = tenantId === victim.id ? "TENANT_NOT_FOUND" : "KEY_NOT_FOUND";
      if (o.code !== "NotFound" || o.reason !== expected) {
        wrong.push(`${label}: expected NotFound ${expected}, got ${o.code} ${o.reason}`);
      }
    };
    for (let n = 0; n < N; n += 50) {
      await Promise.all(Array.from({ length: Math.min(50, N - n) }, (_, k) => one(n + k)));
    }
    console.info(
      `isolation: ${N} substitutions (seed ${seed}), ${leaks.length} leaks, ${wrong.length} unexpected answers; ${[
        ...tally,
      ]
        .map(([k, v]) => `${k}=${v}`)
        .join(" ")}`,
    );
    if (leaks.length > 0 || wrong.length > 0) console.error([...leaks, ...wrong].slice(0, 40).join("\n"));
    expect(leaks).toEqual([]);
    expect(wrong).toEqual([]);
    // No tenant's data moved: nothing revoked, rotated or created across tenants.
    expect(await Promise.all(pool.map((p) => snapshot(p.id)))).toEqual(before);
  }, 120_000);
});

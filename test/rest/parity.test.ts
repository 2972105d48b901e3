// Four ways in, one answer: every implemented RPC (TenantService: 8, KeyService: 9) called over
// gRPC, gRPC-Web, Connect JSON and REST returns the same result, and every error case the same
// google.rpc.Status (code, message and details, ErrorInfo reason included) with, on REST, the HTTP
// status of api.md's mapping.
//
// REST calls use the route of the RPC's own google.api.http rule, read from the descriptor, with
// path variables filled from the request (test/helpers/rest.ts). Results are compared as proto3
// JSON with unpopulated fields emitted, the form the REST face answers in.
//
// Time is the harness's ManualClock and does not move inside a case, so create, update, delete
// and expiry times are equal on all four and compared. What legitimately differs per call (each
// protocol creates its own resource) is the identity and secret of a new resource: ids, derived
// slugs, API keys and the key prefix/last four characters that come from them. Those fields are
// replaced by a marker when set, so their presence is still compared. The clock moves only in
// the last block (expired and rotated keys).
import {
  create,
  type DescMethod,
  type DescService,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  toJson,
} from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type CallOptions, Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigService } from "../../gen/tenantd/v1/config_service_pb.js";
import { Key_Environment } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { Tenant_Environment, Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { type CreateTenantRequestSchema, TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId } from "../../src/domain/ids.js";
import { generateKey, keyIdOf } from "../../src/domain/key-format.js";
import { TENANT_PERMISSIONS } from "../../src/domain/permissions.js";
import { type Harness, startHarness } from "../helpers/app.js";
import {
  errorInfoOf,
  expectedHttpStatus,
  isStatusJson,
  type RestAuth,
  restFetch,
  restRequestFor,
  type StatusJson,
  statusOfConnectError,
} from "../helpers/rest.js";

type Way = "grpc" | "grpc-web" | "connect" | "rest";
const WAYS: Way[] = ["grpc", "grpc-web", "connect", "rest"];

type Result = { ok: true; json: JsonValue } | { ok: false; status: StatusJson; http: number | undefined };

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(() => h?.close());

const owner = (): RestAuth => ({ key: h.ownerKey });

/** One call of `method` over `way`; the result as proto3 JSON or as google.rpc.Status JSON. */
async function callWay(way: Way, method: DescMethod, init: object, auth: RestAuth, route?: number): Promise<Result> {
  if (way === "rest") {
    const res = await restFetch(h.baseUrl, restRequestFor(method, init, route), auth);
    if (res.status === 200) return { ok: true, json: res.json };
    if (!isStatusJson(res.json)) throw new Error(`REST ${res.status} without a google.rpc.Status body`);
    return { ok: false, status: res.json, http: res.status };
  }
  const headers: Record<string, string> = { ...auth.headers };
  if (auth.key !== undefined) headers.authorization = `Bearer ${auth.key}`;
  if (auth.actAs !== undefined) headers["x-tenant-id"] = auth.actAs;
  const client = h.client(method.parent, way) as unknown as Record<
    string,
    (req: unknown, o: CallOptions) => Promise<Parameters<typeof toJson>[1]>
  >;
  const fn = client[method.localName];
  if (!fn) throw new Error(`no client method ${method.localName}`);
  try {
    const res = await fn(create(method.input, init as MessageInitShape<typeof method.input>), {
      headers,
      timeoutMs: 15_000,
    });
    return { ok: true, json: toJson(method.output, res, { alwaysEmitImplicit: true }) };
  } catch (e) {
    return { ok: false, status: statusOfConnectError(e), http: undefined };
  }
}

/** Replaces the values of `volatile` keys, at any depth, by a marker when they are set. */
function normalize(v: JsonValue, volatile: ReadonlySet<string>): JsonValue {
  if (Array.isArray(v)) return v.map((x) => normalize(x, volatile));
  if (v === null || typeof v !== "object") return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) {
    out[k] = volatile.has(k) && x !== "" && x !== null ? "<differs per resource>" : normalize(x, volatile);
  }
  return out;
}

interface Call {
  init: object;
  auth: RestAuth;
  /** REST route index (0: the primary binding); default: the first whose variables are set. */
  route?: number;
}

/**
 * Calls `method` once per protocol (in turn, so that nothing else changes in between) with what
 * `setup` gives for that protocol, expects success everywhere and the same normalized JSON.
 * Returns the raw results by protocol.
 */
async function expectSame(
  method: DescMethod,
  setup: (way: Way) => Call | Promise<Call>,
  volatile: string[] = [],
): Promise<Record<Way, JsonObject>> {
  const raw = {} as Record<Way, JsonObject>;
  const norm = {} as Record<Way, JsonValue>;
  const vol = new Set(volatile);
  for (const way of WAYS) {
    const c = await setup(way);
    const r = await callWay(way, method, c.init, c.auth, c.route);
    if (!r.ok) {
      const info = errorInfoOf(r.status);
      throw new Error(`${method.name} over ${way} failed: ${Code[r.status.code]} ${info?.reason} ${r.status.message}`);
    }
    raw[way] = r.json as JsonObject;
    norm[way] = normalize(r.json, vol);
  }
  for (const way of WAYS) expect(norm[way], `${method.name}: ${way} vs grpc`).toEqual(norm.grpc);
  return raw;
}

/**
 * Calls `method` with the same request on all four protocols and expects the same error: code,
 * ErrorInfo reason (domain tenantd), the whole Status equal across protocols, and on REST the
 * HTTP status given here, which must also be api.md's mapping of the code.
 */
async function expectSameError(
  method: DescMethod,
  c: Call,
  want: { code: Code; reason: string; http: number },
): Promise<StatusJson> {
  expect(want.http, "the case's HTTP status is api.md's mapping").toBe(expectedHttpStatus(want.code, want.reason));
  const statuses = {} as Record<Way, StatusJson>;
  for (const way of WAYS) {
    const r = await callWay(way, method, c.init, c.auth, c.route);
    if (r.ok) throw new Error(`${method.name} over ${way} succeeded; expected ${Code[want.code]} ${want.reason}`);
    const info = errorInfoOf(r.status);
    expect(
      { code: Code[r.status.code], reason: info?.reason, domain: info?.domain },
      `${method.name} over ${way}`,
    ).toEqual({ code: Code[want.code], reason: want.reason, domain: "tenantd" });
    if (way === "rest") expect(r.http, "REST HTTP status").toBe(want.http);
    statuses[way] = r.status;
  }
  for (const way of WAYS) expect(statuses[way], `${method.name} error: ${way} vs grpc`).toEqual(statuses.grpc);
  return statuses.grpc;
}

// --- fixtures --------------------------------------------------------------------------------------

const tenants = () => h.client(TenantService);
const keys = () => h.client(KeyService);
const suffix = () => Math.random().toString(36).slice(2, 8);

const TENANT_FIELDS = {
  name: "Parity Co",
  email: "ops@parity.example",
  environment: Tenant_Environment.LIVE,
  defaultCurrency: "EUR",
  timezone: "Europe/Paris",
  metadata: { tier: "gold", region: "eu" },
} satisfies Omit<MessageInitShape<typeof CreateTenantRequestSchema>, "$typeName">;

async function newTenant(init: Omit<MessageInitShape<typeof CreateTenantRequestSchema>, "$typeName"> = {}) {
  const { tenant } = await tenants().createTenant({ ...TENANT_FIELDS, ...init }, h.as(h.ownerKey));
  if (!tenant) throw new Error("no tenant");
  return tenant;
}

async function tenantKey(tenantId: string, permissions: string[] = [], expireMs?: number) {
  const res = await keys().createKey(
    {
      tenantId,
      label: "parity",
      permissions,
      ...(expireMs !== undefined ? { expireTime: timestampFromMs(expireMs) } : {}),
    },
    h.as(h.ownerKey),
  );
  if (!res.key) throw new Error("no key");
  return { apiKey: res.apiKey, id: res.key.id };
}

/** A tenant with a full-permission key. */
async function tenantWithKey(init: Omit<MessageInitShape<typeof CreateTenantRequestSchema>, "$typeName"> = {}) {
  const tenant = await newTenant(init);
  return { tenant, ...(await tenantKey(tenant.id)) };
}

/**
 * Makes a key's last-used time stable: one call records it, the flush writes it. The clock does
 * not move, so every later use records the same time and a flush during the case changes nothing.
 */
async function settleLastUsed(apiKey: string, tenantId?: string) {
  await keys().listKeys({ pageSize: 1 }, h.as(apiKey, tenantId));
  await h.app.verifier.flush();
}

const unknownKeyId = () => keyIdOf(generateKey("tenant", "test").kid);

// --- results ---------------------------------------------------------------------------------------

describe("TenantService: the same result on gRPC, gRPC-Web, Connect and REST", () => {
  const M = TenantService.method;

  it("CreateTenant (POST /v1/tenants): all but id and derived slug", async () => {
    const plan = `p${suffix()}`;
    const r = await expectSame(M.createTenant, () => ({ init: { ...TENANT_FIELDS, plan }, auth: owner() }), [
      "id",
      "slug",
    ]);
    expect(r.rest.tenant).toMatchObject({ name: "Parity Co", plan, status: "ACTIVE", environment: "LIVE" });
    expect(new Set(WAYS.map((w) => (r[w].tenant as JsonObject).id)).size).toBe(4);
  });

  it("CreateTenant with one request_id: the first creates, the other three replay it exactly", async () => {
    const init = { ...TENANT_FIELDS, slug: `parity-${suffix()}`, requestId: `req-${suffix()}` };
    const r = await expectSame(M.createTenant, () => ({ init, auth: owner() }));
    expect((r.grpc.tenant as JsonObject).slug).toBe(init.slug);
  });

  it("ListTenants (GET /v1/tenants?plan=…&page_size=…): same page and page token, then same next page", async () => {
    const plan = `p${suffix()}`;
    for (let i = 0; i < 3; i++) await newTenant({ plan, name: `Listed ${i}` });
    await newTenant({ plan, environment: Tenant_Environment.SANDBOX });
    // Enum filters travel as query parameters on REST (`status=ACTIVE&environment=LIVE`).
    const filter = { plan, status: Tenant_Status.ACTIVE, environment: Tenant_Environment.LIVE, pageSize: 2 };
    const first = await expectSame(M.listTenants, () => ({ init: filter, auth: owner() }));
    expect(first.rest.tenants).toHaveLength(2);
    const pageToken = String(first.rest.nextPageToken);
    expect(pageToken).not.toBe("");
    const second = await expectSame(M.listTenants, () => ({ init: { ...filter, pageToken }, auth: owner() }));
    expect(second.rest.tenants).toHaveLength(1);
    expect(second.rest.nextPageToken).toBe("");
  });

  it("GetTenant (GET /v1/tenants/{tenant_id}): identical", async () => {
    const t = await newTenant();
    const r = await expectSame(M.getTenant, () => ({ init: { tenantId: t.id }, auth: owner() }));
    expect((r.rest.tenant as JsonObject).id).toBe(t.id);
  });

  it("UpdateTenant (PATCH /v1/tenants/{tenant_id}) with etag: all but id and slug", async () => {
    const r = await expectSame(M.updateTenant, async () => {
      const t = await newTenant();
      return {
        init: {
          tenantId: t.id,
          etag: t.etag,
          name: "Parity Renamed",
          plan: "pro",
          status: Tenant_Status.SUSPENDED,
          webhookEnabled: false,
          metadata: { tier: "platinum" },
        },
        auth: owner(),
      };
    }, ["id", "slug"]);
    expect(r.rest.tenant).toMatchObject({
      name: "Parity Renamed",
      status: "SUSPENDED",
      metadata: { tier: "platinum" },
    });
  });

  it("UpdateTenant with update_mask: masked fields it does not set go back to their defaults", async () => {
    // The mask is a google.protobuf.FieldMask: camelCase paths in the REST body's JSON.
    const r = await expectSame(
      M.updateTenant,
      async () => ({
        init: {
          tenantId: (await newTenant()).id,
          name: "Masked",
          updateMask: { paths: ["name", "default_currency", "timezone"] },
        },
        auth: owner(),
      }),
      ["id", "slug"],
    );
    expect(r.rest.tenant).toMatchObject({ name: "Masked", defaultCurrency: "USD", timezone: "UTC", plan: "free" });
  });

  it("DeleteTenant (DELETE /v1/tenants/{tenant_id}): all but the tenant id", async () => {
    const ids: Partial<Record<Way, string>> = {};
    const r = await expectSame(
      M.deleteTenant,
      async (way) => {
        ids[way] = (await newTenant()).id;
        return { init: { tenantId: ids[way] }, auth: owner() };
      },
      ["tenantId"],
    );
    for (const way of WAYS) expect(r[way].tenantId).toBe(ids[way]);
  });

  it("GetCurrentTenant (GET /v1/tenant): identical, with a tenant key and with an owner acting as it", async () => {
    const t = await tenantWithKey();
    await expectSame(M.getCurrentTenant, () => ({ init: {}, auth: { key: t.apiKey } }));
    await expectSame(M.getCurrentTenant, () => ({ init: {}, auth: { key: h.ownerKey, actAs: t.tenant.id } }));
  });

  it("UpdateCurrentTenant (PATCH /v1/tenant): all but id and slug", async () => {
    const r = await expectSame(M.updateCurrentTenant, async () => {
      const t = await tenantWithKey();
      return {
        init: {
          timezone: "Europe/Berlin",
          defaultCurrency: "CHF",
          email: "new@parity.example",
          metadata: { team: "core" },
        },
        auth: { key: t.apiKey },
      };
    }, ["id", "slug"]);
    expect(r.rest.tenant).toMatchObject({ timezone: "Europe/Berlin", defaultCurrency: "CHF" });
  });

  it("DeleteCurrentTenant (DELETE /v1/tenant): all but the tenant id", async () => {
    const ids: Partial<Record<Way, string>> = {};
    const r = await expectSame(
      M.deleteCurrentTenant,
      async (way) => {
        const t = await tenantWithKey();
        ids[way] = t.tenant.id;
        return { init: {}, auth: { key: t.apiKey } };
      },
      ["tenantId"],
    );
    for (const way of WAYS) expect(r[way].tenantId).toBe(ids[way]);
  });
});

describe("KeyService: the same result on gRPC, gRPC-Web, Connect and REST", () => {
  const M = KeyService.method;
  /** Fields that identify a newly issued key or its secret. */
  const NEW_KEY = ["id", "apiKey", "prefix", "lastFour"];
  let home: Awaited<ReturnType<typeof tenantWithKey>>;
  const expireMs = () => h.clock.now() + 86_400_000;

  beforeAll(async () => {
    home = await tenantWithKey({ name: "Key Parity" });
  });

  it("CreateKey: owner on /v1/tenants/{tenant_id}/keys, tenant key on /v1/tenant/keys", async () => {
    const init = {
      tenantId: home.tenant.id,
      label: "parity key",
      permissions: ["tenant:read", "keys:read"],
      expireTime: timestampFromMs(expireMs()),
    };
    const byOwner = await expectSame(M.createKey, () => ({ init, auth: owner(), route: 0 }), NEW_KEY);
    expect(byOwner.rest.key).toMatchObject({ state: "ACTIVE", permissions: ["tenant:read", "keys:read"] });
    expect(String(byOwner.rest.apiKey)).toMatch(/^tdk_tenant_live_/);
    const { tenantId: _, ...own } = init;
    const byTenant = await expectSame(
      M.createKey,
      () => ({ init: own, auth: { key: home.apiKey }, route: 1 }),
      NEW_KEY,
    );
    expect(normalize(byTenant.rest, new Set(NEW_KEY))).toEqual(normalize(byOwner.rest, new Set(NEW_KEY)));
  });

  it("ListKeys: identical pages and token, on both routes", async () => {
    const t = await tenantWithKey();
    for (let i = 0; i < 2; i++) await tenantKey(t.tenant.id, ["keys:read"]);
    await settleLastUsed(t.apiKey);
    const byOwner = await expectSame(M.listKeys, () => ({
      init: { tenantId: t.tenant.id, pageSize: 2 },
      auth: owner(),
      route: 0,
    }));
    expect(byOwner.rest.keys).toHaveLength(2);
    expect(byOwner.rest.nextPageToken).not.toBe("");
    const byTenant = await expectSame(M.listKeys, () => ({
      init: { pageSize: 2 },
      auth: { key: t.apiKey },
      route: 1,
    }));
    expect(byTenant.rest).toEqual(byOwner.rest);
    const rest = await expectSame(M.listKeys, () => ({
      init: { pageSize: 2, pageToken: String(byOwner.rest.nextPageToken) },
      auth: { key: t.apiKey },
    }));
    expect(rest.rest.keys).toHaveLength(1);
    // A bool query parameter (`include_revoked=true`) and a revoked key in the page.
    const gone = await tenantKey(t.tenant.id, ["keys:read"]);
    await keys().revokeKey({ tenantId: t.tenant.id, keyId: gone.id }, h.as(h.ownerKey));
    const all = await expectSame(M.listKeys, () => ({
      init: { tenantId: t.tenant.id, includeRevoked: true },
      auth: owner(),
    }));
    expect((all.rest.keys as JsonObject[]).map((k) => k.state)).toContain("REVOKED");
  });

  it("GetKey: identical, on both routes", async () => {
    const k = await tenantKey(home.tenant.id, ["usage:read"]);
    const byOwner = await expectSame(M.getKey, () => ({
      init: { tenantId: home.tenant.id, keyId: k.id },
      auth: owner(),
      route: 0,
    }));
    const byTenant = await expectSame(M.getKey, () => ({
      init: { keyId: k.id },
      auth: { key: home.apiKey },
      route: 1,
    }));
    expect(byTenant.rest).toEqual(byOwner.rest);
  });

  it("RevokeKey: all but the new key's identity", async () => {
    const r = await expectSame(
      M.revokeKey,
      async () => ({
        init: { tenantId: home.tenant.id, keyId: (await tenantKey(home.tenant.id, ["keys:read"])).id },
        auth: owner(),
      }),
      NEW_KEY,
    );
    expect(r.rest.key).toMatchObject({ state: "REVOKED" });
  });

  it("RotateKey (POST …/keys/{key_id}:rotate): all but the new key's identity and secret", async () => {
    const r = await expectSame(
      M.rotateKey,
      async () => ({
        init: { keyId: (await tenantKey(home.tenant.id, ["keys:read"])).id, gracePeriod: durationFromMs(3_600_000) },
        auth: { key: home.apiKey },
      }),
      NEW_KEY,
    );
    expect(r.rest.key).toMatchObject({ state: "ACTIVE" });
    expect(String(r.rest.apiKey)).toMatch(/^tdk_tenant_live_/);
  });

  it("VerifyKey (POST /v1/keys:verify): identical, valid and refused", async () => {
    const k = await tenantKey(home.tenant.id, ["tenant:read"]);
    const valid = await expectSame(M.verifyKey, () => ({ init: { apiKey: k.apiKey }, auth: owner() }));
    expect(valid.rest).toMatchObject({ valid: true, keyId: k.id, tenantId: home.tenant.id });
    const refused = await expectSame(M.verifyKey, () => ({
      init: { apiKey: k.apiKey, permission: "tenant:write" },
      auth: owner(),
    }));
    expect(refused.rest).toMatchObject({ valid: false, reason: "PERMISSION_MISSING" });
  });

  it("CreateOwnerKey (POST /v1/owner/keys): all but the new key's identity and secret", async () => {
    const r = await expectSame(
      M.createOwnerKey,
      () => ({
        init: {
          label: "parity owner",
          permissions: ["tenants:read"],
          environment: Key_Environment.TEST,
          expireTime: timestampFromMs(expireMs()),
        },
        auth: owner(),
      }),
      NEW_KEY,
    );
    expect(r.rest.key).toMatchObject({ kind: "OWNER", environment: "TEST", permissions: ["tenants:read"] });
  });

  it("ListOwnerKeys (GET /v1/owner/keys): identical", async () => {
    await settleLastUsed(h.ownerKey, home.tenant.id);
    const r = await expectSame(M.listOwnerKeys, () => ({ init: { pageSize: 3 }, auth: owner() }));
    expect(r.rest.keys).toHaveLength(3);
  });

  it("RevokeOwnerKey (DELETE /v1/owner/keys/{key_id}): all but the key's identity", async () => {
    const r = await expectSame(
      M.revokeOwnerKey,
      async () => {
        const k = await keys().createOwnerKey({ label: "to revoke", permissions: ["tenants:read"] }, h.as(h.ownerKey));
        return { init: { keyId: k.key?.id ?? "" }, auth: owner() };
      },
      NEW_KEY,
    );
    expect(r.rest.key).toMatchObject({ state: "REVOKED", kind: "OWNER" });
  });
});

// --- errors ----------------------------------------------------------------------------------------

describe("errors: the same google.rpc.Status on all four, and api.md's HTTP status on REST", () => {
  const T = TenantService.method;
  const K = KeyService.method;
  let home: Awaited<ReturnType<typeof tenantWithKey>>;
  let other: Awaited<ReturnType<typeof tenantWithKey>>;

  beforeAll(async () => {
    home = await tenantWithKey({ name: "Error Parity" });
    other = await tenantWithKey({ name: "Error Parity Other" });
  });

  it("KEY_MISSING → 401", async () => {
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: {} },
      { code: Code.Unauthenticated, reason: "KEY_MISSING", http: 401 },
    );
  });

  it("KEY_INVALID → 401 (malformed key, and a well-formed key nobody issued)", async () => {
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: "tdk_tenant_live_notakey" } },
      { code: Code.Unauthenticated, reason: "KEY_INVALID", http: 401 },
    );
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: generateKey("tenant", "live").apiKey } },
      { code: Code.Unauthenticated, reason: "KEY_INVALID", http: 401 },
    );
  });

  it("KEY_REVOKED → 401", async () => {
    const k = await tenantKey(home.tenant.id);
    await keys().revokeKey({ tenantId: home.tenant.id, keyId: k.id }, h.as(h.ownerKey));
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: k.apiKey } },
      { code: Code.Unauthenticated, reason: "KEY_REVOKED", http: 401 },
    );
  });

  it("TENANT_SUSPENDED → 403", async () => {
    const t = await tenantWithKey();
    await tenants().updateTenant({ tenantId: t.tenant.id, status: Tenant_Status.SUSPENDED }, h.as(h.ownerKey));
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: t.apiKey } },
      { code: Code.PermissionDenied, reason: "TENANT_SUSPENDED", http: 403 },
    );
  });

  it("TENANT_NOT_FOUND → 404 (GetTenant of an unknown id; owner acting as an unknown tenant)", async () => {
    await expectSameError(
      T.getTenant,
      { init: { tenantId: newId("ten") }, auth: owner() },
      { code: Code.NotFound, reason: "TENANT_NOT_FOUND", http: 404 },
    );
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: h.ownerKey, actAs: newId("ten") } },
      { code: Code.NotFound, reason: "TENANT_NOT_FOUND", http: 404 },
    );
  });

  it("KEY_NOT_FOUND → 404 (unknown key; another tenant's key)", async () => {
    await expectSameError(
      K.getKey,
      { init: { tenantId: home.tenant.id, keyId: unknownKeyId() }, auth: owner() },
      { code: Code.NotFound, reason: "KEY_NOT_FOUND", http: 404 },
    );
    // A tenant never learns that another tenant's key exists.
    await expectSameError(
      K.getKey,
      { init: { keyId: other.id }, auth: { key: home.apiKey } },
      { code: Code.NotFound, reason: "KEY_NOT_FOUND", http: 404 },
    );
  });

  it("PERMISSION_MISSING → 403", async () => {
    const readOnly = await tenantKey(
      home.tenant.id,
      TENANT_PERMISSIONS.filter((p) => p.endsWith(":read")),
    );
    await expectSameError(
      T.updateCurrentTenant,
      { init: { name: "Nope" }, auth: { key: readOnly.apiKey } },
      { code: Code.PermissionDenied, reason: "PERMISSION_MISSING", http: 403 },
    );
  });

  it("OWNER_KEY_REQUIRED → 403", async () => {
    await expectSameError(
      T.listTenants,
      { init: {}, auth: { key: home.apiKey } },
      { code: Code.PermissionDenied, reason: "OWNER_KEY_REQUIRED", http: 403 },
    );
  });

  it("ACT_AS_FORBIDDEN → 403", async () => {
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: home.apiKey, actAs: other.tenant.id } },
      { code: Code.PermissionDenied, reason: "ACT_AS_FORBIDDEN", http: 403 },
    );
  });

  it("TENANT_CONTEXT_REQUIRED → 400", async () => {
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: owner() },
      { code: Code.FailedPrecondition, reason: "TENANT_CONTEXT_REQUIRED", http: 400 },
    );
  });

  it("FIELD_INVALID → 422 (service check, protovalidate on the body, protovalidate on a path value)", async () => {
    const tz = await expectSameError(
      T.updateCurrentTenant,
      { init: { timezone: "Mars/Olympus" }, auth: { key: home.apiKey } },
      { code: Code.InvalidArgument, reason: "FIELD_INVALID", http: 422 },
    );
    expect(tz.details.some((d) => JSON.stringify(d).includes('"timezone"'))).toBe(true);
    await expectSameError(
      T.createTenant,
      { init: { name: "", email: "not-an-email" }, auth: owner() },
      { code: Code.InvalidArgument, reason: "FIELD_INVALID", http: 422 },
    );
    await expectSameError(
      T.getTenant,
      { init: { tenantId: `ten_${"x".repeat(80)}` }, auth: owner() },
      { code: Code.InvalidArgument, reason: "FIELD_INVALID", http: 422 },
    );
  });

  it("FIELD_IMMUTABLE → 422", async () => {
    await expectSameError(
      T.updateCurrentTenant,
      { init: { slug: "another-slug" }, auth: { key: home.apiKey } },
      { code: Code.InvalidArgument, reason: "FIELD_IMMUTABLE", http: 422 },
    );
  });

  it("SLUG_TAKEN → 409", async () => {
    await expectSameError(
      T.createTenant,
      { init: { ...TENANT_FIELDS, slug: home.tenant.slug }, auth: owner() },
      { code: Code.AlreadyExists, reason: "SLUG_TAKEN", http: 409 },
    );
  });

  it("REQUEST_ID_CONFLICT → 400", async () => {
    const requestId = `req-${suffix()}`;
    await tenants().createTenant({ ...TENANT_FIELDS, requestId }, h.as(h.ownerKey));
    await expectSameError(
      T.createTenant,
      { init: { ...TENANT_FIELDS, name: "Another body", requestId }, auth: owner() },
      { code: Code.FailedPrecondition, reason: "REQUEST_ID_CONFLICT", http: 400 },
    );
  });

  it("PAGE_TOKEN_INVALID → 400 (garbage; a token of another query)", async () => {
    await expectSameError(
      T.listTenants,
      { init: { pageToken: "garbage" }, auth: owner() },
      { code: Code.InvalidArgument, reason: "PAGE_TOKEN_INVALID", http: 400 },
    );
    const plan = `p${suffix()}`;
    for (let i = 0; i < 2; i++) await newTenant({ plan });
    const { nextPageToken } = await tenants().listTenants({ plan, pageSize: 1 }, h.as(h.ownerKey));
    expect(nextPageToken).not.toBe("");
    await expectSameError(
      T.listTenants,
      { init: { pageToken: nextPageToken, pageSize: 1 }, auth: owner() },
      { code: Code.InvalidArgument, reason: "PAGE_TOKEN_INVALID", http: 400 },
    );
  });

  it("ETAG_MISMATCH → 409", async () => {
    const t = await newTenant();
    await tenants().updateTenant({ tenantId: t.id, plan: "pro" }, h.as(h.ownerKey));
    await expectSameError(
      T.updateTenant,
      { init: { tenantId: t.id, etag: t.etag, name: "Stale" }, auth: owner() },
      { code: Code.Aborted, reason: "ETAG_MISMATCH", http: 409 },
    );
  });

  it("STATE_CONFLICT → 400 (revoking a revoked key; rotating it)", async () => {
    const k = await tenantKey(home.tenant.id, ["keys:read"]);
    await keys().revokeKey({ tenantId: home.tenant.id, keyId: k.id }, h.as(h.ownerKey));
    await expectSameError(
      K.revokeKey,
      { init: { tenantId: home.tenant.id, keyId: k.id }, auth: owner() },
      { code: Code.FailedPrecondition, reason: "STATE_CONFLICT", http: 400 },
    );
    await expectSameError(
      K.rotateKey,
      { init: { keyId: k.id }, auth: { key: home.apiKey } },
      { code: Code.FailedPrecondition, reason: "STATE_CONFLICT", http: 400 },
    );
  });

  it("NOT_IMPLEMENTED → 501 (a pending ConfigService route)", async () => {
    await expectSameError(
      ConfigService.method.getConfig,
      { init: {}, auth: { key: home.apiKey } },
      { code: Code.Unimplemented, reason: "NOT_IMPLEMENTED", http: 501 },
    );
  });

  // Last: the clock moves past expiry and grace here.
  it("KEY_EXPIRED and KEY_ROTATED → 401 (h.clock past expiry and grace)", async () => {
    const expiring = await tenantKey(home.tenant.id, [], h.clock.now() + 60_000);
    const rotating = await tenantKey(home.tenant.id);
    await keys().rotateKey(
      { tenantId: home.tenant.id, keyId: rotating.id, gracePeriod: durationFromMs(60_000) },
      h.as(h.ownerKey),
    );
    // Still valid before the boundary, on every protocol.
    await expectSame(T.getCurrentTenant, () => ({ init: {}, auth: { key: expiring.apiKey } }));
    await expectSame(T.getCurrentTenant, () => ({ init: {}, auth: { key: rotating.apiKey } }));
    h.clock.advance(120_000);
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: expiring.apiKey } },
      { code: Code.Unauthenticated, reason: "KEY_EXPIRED", http: 401 },
    );
    await expectSameError(
      T.getCurrentTenant,
      { init: {}, auth: { key: rotating.apiKey } },
      { code: Code.Unauthenticated, reason: "KEY_ROTATED", http: 401 },
    );
  });
});

/** Every implemented RPC has a success case above: a new RPC must get one. */
it("covers all 8 TenantService and all 9 KeyService RPCs", () => {
  const covered: Record<string, string[]> = {
    [TenantService.typeName]: [
      "CreateTenant",
      "ListTenants",
      "GetTenant",
      "UpdateTenant",
      "DeleteTenant",
      "GetCurrentTenant",
      "UpdateCurrentTenant",
      "DeleteCurrentTenant",
    ],
    [KeyService.typeName]: [
      "CreateKey",
      "ListKeys",
      "GetKey",
      "RevokeKey",
      "RotateKey",
      "VerifyKey",
      "CreateOwnerKey",
      "ListOwnerKeys",
      "RevokeOwnerKey",
    ],
  };
  const services: DescService[] = [TenantService, KeyService];
  for (const s of services)
    expect(s.methods.map((m) => m.name).sort()).toEqual([...(covered[s.typeName] ?? [])].sort());
});

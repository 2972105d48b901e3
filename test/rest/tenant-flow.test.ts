// The REST face of a whole tenantd (test/helpers/app.ts), called with plain fetch: the seeds'
// flow through create, keys, the current tenant, suspension, act-as and revocation, and the
// transcoder's refusals. Every call goes through the same interceptors as gRPC and Connect, so
// the statuses here are the RPC codes mapped by api.md's table (422 for field values).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../helpers/app.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(() => h?.close());

type Json = Record<string, unknown>;

async function rest(
  method: string,
  path: string,
  opts: { key?: string; actAs?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; json: Json; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.actAs) headers["x-tenant-id"] = opts.actAs;
  const init: RequestInit = { method, headers };
  if (opts.body !== undefined) {
    headers["content-type"] ??= "application/json";
    init.body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
  }
  const res = await fetch(h.baseUrl + path, init);
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Json) : {}, headers: res.headers };
}

const details = (j: Json) => (j.details ?? []) as Json[];
const errorInfo = (j: Json) => details(j).find((d) => d["@type"] === "type.googleapis.com/google.rpc.ErrorInfo");
const badRequest = (j: Json) => details(j).find((d) => d["@type"] === "type.googleapis.com/google.rpc.BadRequest");

function expectStatus(r: { status: number; json: Json }, status: number, reason: string): void {
  expect({ status: r.status, reason: errorInfo(r.json)?.reason, domain: errorInfo(r.json)?.domain }).toEqual({
    status,
    reason,
    domain: "tenantd",
  });
  expect(typeof r.json.code).toBe("number");
  expect(typeof r.json.message).toBe("string");
}

describe("the seeds' flow over REST", () => {
  let tenantId = "";
  let tenantKey = "";
  let keyId = "";

  it("creates a tenant (owner key)", async () => {
    const r = await rest("POST", "/v1/tenants", {
      key: h.ownerKey,
      body: { name: "Rest Co", email: "ops@rest.example", environment: "sandbox" },
    });
    expect(r.status).toBe(200);
    const tenant = r.json.tenant as Json;
    expect(tenant).toMatchObject({
      name: "Rest Co",
      email: "ops@rest.example",
      status: "ACTIVE",
      environment: "SANDBOX",
    });
    expect(String(tenant.id)).toMatch(/^ten_/);
    // Unpopulated fields are emitted.
    expect(tenant).toHaveProperty("webhookEnabled", false);
    tenantId = String(tenant.id);
  });

  it("creates a tenant key (POST /v1/tenants/{id}/keys)", async () => {
    const r = await rest("POST", `/v1/tenants/${tenantId}/keys`, { key: h.ownerKey, body: { label: "rest key" } });
    expect(r.status).toBe(200);
    tenantKey = String(r.json.apiKey);
    keyId = String((r.json.key as Json).id);
    expect(keyId).toMatch(/^key_/);
    expect(tenantKey.length).toBeGreaterThan(40);
  });

  it("reads the current tenant with the tenant key", async () => {
    const r = await rest("GET", "/v1/tenant", { key: tenantKey });
    expect(r.status).toBe(200);
    expect((r.json.tenant as Json).id).toBe(tenantId);
    expect(r.headers.get("x-request-id")).toMatch(/\S/);
  });

  it("answers 422 with a field violation for an invalid timezone", async () => {
    const r = await rest("PATCH", "/v1/tenant", { key: tenantKey, body: { timezone: "Mars/Olympus" } });
    expectStatus(r, 422, "FIELD_INVALID");
    expect(r.json.code).toBe(3);
    expect(badRequest(r.json)?.fieldViolations).toEqual([expect.objectContaining({ field: "timezone" })]);
  });

  it("answers 422 for an immutable slug", async () => {
    const r = await rest("PATCH", "/v1/tenant", { key: tenantKey, body: { slug: "another-slug" } });
    expectStatus(r, 422, "FIELD_IMMUTABLE");
  });

  it("updates the current tenant", async () => {
    const r = await rest("PATCH", "/v1/tenant", { key: tenantKey, body: { timezone: "Europe/Paris" } });
    expect(r.status).toBe(200);
    expect((r.json.tenant as Json).timezone).toBe("Europe/Paris");
  });

  it("suspends the tenant (case-insensitive enum); its key gets 403", async () => {
    const s = await rest("PATCH", `/v1/tenants/${tenantId}`, { key: h.ownerKey, body: { status: "suspended" } });
    expect(s.status).toBe(200);
    expect((s.json.tenant as Json).status).toBe("SUSPENDED");
    expectStatus(await rest("GET", "/v1/tenant", { key: tenantKey }), 403, "TENANT_SUSPENDED");
  });

  it("still lets the owner read the suspended tenant with x-tenant-id", async () => {
    const r = await rest("GET", "/v1/tenant", { key: h.ownerKey, actAs: tenantId });
    expect(r.status).toBe(200);
    expect((r.json.tenant as Json).status).toBe("SUSPENDED");
  });

  it("reactivates the tenant; its key works again", async () => {
    const r = await rest("PATCH", `/v1/tenants/${tenantId}`, { key: h.ownerKey, body: { status: "ACTIVE" } });
    expect(r.status).toBe(200);
    expect((await rest("GET", "/v1/tenant", { key: tenantKey })).status).toBe(200);
  });

  it("lists the tenant's keys through the additional binding", async () => {
    const r = await rest("GET", "/v1/tenant/keys?page_size=10", { key: tenantKey });
    expect(r.status).toBe(200);
    expect((r.json.keys as Json[]).map((k) => k.id)).toContain(keyId);
  });

  it("revokes the key (DELETE /v1/tenants/{id}/keys/{keyId}); it then gets 401", async () => {
    const r = await rest("DELETE", `/v1/tenants/${tenantId}/keys/${keyId}`, { key: h.ownerKey });
    expect(r.status).toBe(200);
    expectStatus(await rest("GET", "/v1/tenant", { key: tenantKey }), 401, "KEY_REVOKED");
  });
});

describe("refusals", () => {
  it("answers 401 without a key", async () => {
    expectStatus(await rest("GET", "/v1/tenant"), 401, "KEY_MISSING");
  });

  it("answers 404 for an unknown tenant", async () => {
    expectStatus(await rest("GET", "/v1/tenants/ten_doesnotexist", { key: h.ownerKey }), 404, "TENANT_NOT_FOUND");
  });

  it("answers 404 for a trailing slash and for an unknown path, as google.rpc.Status", async () => {
    const slash = await rest("GET", "/v1/tenant/", { key: h.ownerKey });
    expectStatus(slash, 404, "ROUTE_NOT_FOUND");
    expect(slash.json.code).toBe(5);
    expectStatus(await rest("GET", "/v1/nothing-here", { key: h.ownerKey }), 404, "ROUTE_NOT_FOUND");
  });

  it("answers 405 with Allow for a wrong method", async () => {
    const r = await rest("PUT", "/v1/tenant", { key: h.ownerKey, body: {} });
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("DELETE, GET, PATCH");
  });

  it("answers 400 for an unknown query parameter", async () => {
    const r = await rest("GET", "/v1/tenants?bogus=1", { key: h.ownerKey });
    expectStatus(r, 400, "REQUEST_MALFORMED");
    expect(badRequest(r.json)?.fieldViolations).toEqual([expect.objectContaining({ field: "bogus" })]);
  });

  it("answers 400 for an unknown body field", async () => {
    const r = await rest("POST", "/v1/tenants", {
      key: h.ownerKey,
      body: { name: "X", email: "x@example.com", nmae: 1 },
    });
    expectStatus(r, 400, "REQUEST_MALFORMED");
  });

  it("answers 400 for malformed JSON", async () => {
    expectStatus(
      await rest("POST", "/v1/tenants", { key: h.ownerKey, body: '{"name": "x",' }),
      400,
      "REQUEST_MALFORMED",
    );
  });

  it("answers 400 for a body that fails validation before the service (bad enum value)", async () => {
    const r = await rest("GET", "/v1/tenants?status=sleepy", { key: h.ownerKey });
    expectStatus(r, 400, "REQUEST_MALFORMED");
  });

  it("filters with a case-insensitive enum query parameter", async () => {
    const r = await rest("GET", "/v1/tenants?status=active&page_size=5", { key: h.ownerKey });
    expect(r.status).toBe(200);
    for (const t of r.json.tenants as Json[]) expect(t.status).toBe("ACTIVE");
  });

  it("answers 501 for a declared but unimplemented RPC", async () => {
    const { tenant, key } = await h.newTenant();
    expect(tenant.id).toMatch(/^ten_/);
    expectStatus(await rest("GET", "/v1/tenant/config", { key }), 501, "NOT_IMPLEMENTED");
  });

  it("keeps /healthz and /readyz", async () => {
    const live = await fetch(`${h.baseUrl}/healthz`);
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: "ok" });
    const ready = await fetch(`${h.baseUrl}/readyz`);
    expect(ready.status).toBe(200);
  });
});

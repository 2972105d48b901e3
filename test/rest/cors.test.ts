// CORS on every protocol of the port: preflights and actual requests from an allowed and a
// disallowed origin, over REST, Connect and gRPC-Web paths of a whole tenantd; no CORS at all
// when no origin is configured; and the TENANTD_CORS_ORIGINS checks. Requests go through
// node:http so that the Origin header is sent exactly as a browser would.
import * as http from "node:http";
import { cors } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { type Harness, startHarness } from "../helpers/app.js";

const ALLOWED = "https://app.example.com";
const OTHER = "https://evil.example.net";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ corsOrigins: [ALLOWED] });
});
afterAll(() => h?.close());

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function send(port: number, method: string, path: string, headers: Record<string, string>, body?: Buffer | string) {
  return new Promise<Reply>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const list = (v: string | string[] | undefined) =>
  String(v ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);

// One route per protocol: the actual request a browser client would send, and its preflight.
const PROTOCOLS = [
  {
    name: "REST",
    method: "GET",
    path: "/v1/tenant",
    headers: (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` }),
    body: undefined as Buffer | string | undefined,
    requestHeaders: "authorization, x-tenant-id",
  },
  {
    name: "Connect",
    method: "POST",
    path: "/tenantd.v1.TenantService/GetCurrentTenant",
    headers: (key: string): Record<string, string> => ({
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      "connect-protocol-version": "1",
    }),
    body: "{}" as Buffer | string | undefined,
    requestHeaders: "authorization, content-type, connect-protocol-version, connect-timeout-ms",
  },
  {
    name: "gRPC-Web",
    method: "POST",
    path: "/tenantd.v1.TenantService/GetCurrentTenant",
    headers: (key: string): Record<string, string> => ({
      authorization: `Bearer ${key}`,
      "content-type": "application/grpc-web+proto",
      "x-grpc-web": "1",
    }),
    // One uncompressed, empty message frame.
    body: Buffer.from([0, 0, 0, 0, 0]) as Buffer | string | undefined,
    requestHeaders: "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout",
  },
];

describe.each(PROTOCOLS)("CORS over $name", (p) => {
  it("answers an allowed origin's preflight 204 with the methods, headers and max age", async () => {
    const r = await send(h.port, "OPTIONS", p.path, {
      origin: ALLOWED,
      "access-control-request-method": p.method,
      "access-control-request-headers": p.requestHeaders,
    });
    expect(r.status).toBe(204);
    expect(r.headers["access-control-allow-origin"]).toBe(ALLOWED);
    expect(list(r.headers.vary)).toContain("origin");
    expect(list(r.headers["access-control-allow-methods"])).toContain(p.method.toLowerCase());
    const allowed = list(r.headers["access-control-allow-headers"]);
    for (const x of list(p.requestHeaders)) expect(allowed).toContain(x);
    for (const x of cors.allowedHeaders) expect(allowed).toContain(x.toLowerCase());
    expect(Number(r.headers["access-control-max-age"])).toBeGreaterThan(0);
    expect(r.headers["access-control-allow-credentials"]).toBeUndefined();
  });

  it("gives an allowed origin's actual request Allow-Origin and Expose-Headers", async () => {
    const t = await h.newTenant();
    const r = await send(h.port, p.method, p.path, { origin: ALLOWED, ...p.headers(t.key) }, p.body);
    expect(r.status).toBe(200);
    expect(r.headers["access-control-allow-origin"]).toBe(ALLOWED);
    expect(list(r.headers.vary)).toContain("origin");
    const exposed = list(r.headers["access-control-expose-headers"]);
    for (const x of [
      "grpc-status",
      "grpc-message",
      "grpc-status-details-bin",
      "x-request-id",
      "retry-after",
      "ratelimit-limit",
      "ratelimit-remaining",
      "ratelimit-reset",
    ]) {
      expect(exposed).toContain(x);
    }
    // The call itself went through as usual (the tenant is the caller's).
    expect(r.body.toString("latin1")).toContain(t.tenant.id);
  });

  it("also marks an allowed origin's error responses", async () => {
    const r = await send(h.port, p.method, p.path, { origin: ALLOWED, ...p.headers("tdk_bogus") }, p.body);
    expect(r.headers["access-control-allow-origin"]).toBe(ALLOWED);
  });

  it("refuses a disallowed origin's preflight (403, no CORS headers)", async () => {
    const r = await send(h.port, "OPTIONS", p.path, {
      origin: OTHER,
      "access-control-request-method": p.method,
      "access-control-request-headers": p.requestHeaders,
    });
    expect(r.status).toBe(403);
    for (const k of Object.keys(r.headers)) expect(k.startsWith("access-control-")).toBe(false);
    expect(list(r.headers.vary)).toContain("origin");
  });

  it("gives a disallowed origin's actual request no CORS headers", async () => {
    const t = await h.newTenant();
    const r = await send(h.port, p.method, p.path, { origin: OTHER, ...p.headers(t.key) }, p.body);
    // The server still answers (CORS is enforced by the browser); the page cannot read it.
    expect(r.status).toBe(200);
    for (const k of Object.keys(r.headers)) expect(k.startsWith("access-control-")).toBe(false);
  });
});

describe("CORS outside the RPC paths", () => {
  it("covers /openapi.json and requests without Origin are untouched", async () => {
    const r = await send(h.port, "GET", "/openapi.json", { origin: ALLOWED });
    expect(r.headers["access-control-allow-origin"]).toBe(ALLOWED);
    const plain = await send(h.port, "GET", "/openapi.json", {});
    expect(plain.headers["access-control-allow-origin"]).toBeUndefined();
    expect(plain.headers.vary ?? "").not.toMatch(/origin/i);
  });
});

describe("CORS configuration", () => {
  let server: TestServer | undefined;
  afterAll(() => server?.close());

  it("sends no CORS headers when no origin is configured", async () => {
    server = await startTestServer({ routes: () => {} });
    const pre = await send(server.port, "OPTIONS", "/v1/tenant", {
      origin: ALLOWED,
      "access-control-request-method": "GET",
    });
    expect(pre.status).not.toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBeUndefined();
    const r = await send(server.port, "GET", "/v1/tenant", { origin: ALLOWED });
    expect(r.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("answers `*` with a wildcard Allow-Origin", async () => {
    const s = await startTestServer({ routes: () => {}, corsOrigins: ["*"] });
    try {
      const pre = await send(s.port, "OPTIONS", "/x", { origin: OTHER, "access-control-request-method": "PUT" });
      expect(pre.status).toBe(204);
      expect(pre.headers["access-control-allow-origin"]).toBe("*");
    } finally {
      await s.close();
    }
  });

  it("reads TENANTD_CORS_ORIGINS as a comma-separated list of exact origins", () => {
    expect(loadConfig({}).corsOrigins).toEqual([]);
    expect(
      loadConfig({ TENANTD_CORS_ORIGINS: " https://app.example.com , http://localhost:3000,," }).corsOrigins,
    ).toEqual(["https://app.example.com", "http://localhost:3000"]);
    expect(loadConfig({ TENANTD_CORS_ORIGINS: "*" }).corsOrigins).toEqual(["*"]);
    for (const bad of [
      "app.example.com",
      "https://app.example.com/",
      "https://app.example.com/path",
      "https://App.Example.com",
      "https://app.example.com:443",
      "ftp://app.example.com",
      "*,https://app.example.com",
      "https://user@app.example.com",
    ]) {
      expect(() => loadConfig({ TENANTD_CORS_ORIGINS: bad }), bad).toThrow(/TENANTD_CORS_ORIGINS/);
    }
  });
});

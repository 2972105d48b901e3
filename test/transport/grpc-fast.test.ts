import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { GetTenantRequestSchema } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { type Harness, startHarness } from "../helpers/app.js";
import { bufCurl } from "./helpers.js";

// The gRPC fast path (src/transport/grpc-fast.ts) against connect-node: the same requests, sent
// as raw HTTP/2, to one server with the fast path and one without; status, headers, trailers
// (grpc-status, grpc-message, grpc-status-details-bin with its ErrorInfo) and body must be equal.

interface Raw {
  headers: Record<string, unknown>;
  trailers: Record<string, unknown>;
  body: string;
}

/** Headers that legitimately differ between two servers (the clock). */
const VOLATILE = new Set(["date"]);

function raw(baseUrl: string, path: string, headers: Record<string, string>, body: Uint8Array): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.once("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      // Fixed, so that both servers echo the same id.
      "x-request-id": "fast-path-test",
      ...headers,
    });
    const out: Raw = { headers: {}, trailers: {}, body: "" };
    const chunks: Buffer[] = [];
    const copy = (h: http2.IncomingHttpHeaders, to: Record<string, unknown>) => {
      for (const [k, v] of Object.entries(h)) if (!VOLATILE.has(k)) to[k] = v;
    };
    req.on("response", (h) => copy(h, out.headers));
    req.on("trailers", (t) => copy(t, out.trailers));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.once("error", (e) => {
      session.close();
      reject(e);
    });
    // On 'end' (the server finished its side), not 'close': connect-node leaves the stream of an
    // oversized request half-open, waiting for a body it never reads.
    req.once("end", () => {
      session.destroy();
      out.body = Buffer.concat(chunks).toString("hex");
      resolve(out);
    });
    req.end(body);
  });
}

function frame(message: Uint8Array, flags = 0): Buffer {
  const b = Buffer.alloc(5 + message.length);
  b[0] = flags;
  b.writeUInt32BE(message.length, 1);
  b.set(message, 5);
  return b;
}

const EMPTY = frame(new Uint8Array(0));
const CHECK = "/grpc.health.v1.Health/Check";
const CURRENT = "/tenantd.v1.TenantService/GetCurrentTenant";
const GET_TENANT = "/tenantd.v1.TenantService/GetTenant";

let fast: Harness;
let slow: Harness;

beforeAll(async () => {
  [fast, slow] = await Promise.all([startHarness({ grpcFastPath: true }), startHarness({ grpcFastPath: false })]);
}, 60_000);
afterAll(async () => {
  await Promise.all([fast?.close(), slow?.close()]);
});

async function both(path: string, headers: Record<string, string>, body: Uint8Array): Promise<[Raw, Raw]> {
  return [await raw(fast.baseUrl, path, headers, body), await raw(slow.baseUrl, path, headers, body)];
}

describe("gRPC fast path vs connect-node, byte for byte", () => {
  const bad = (h: Harness) => ({ authorization: `Bearer ${h.ownerKey.slice(0, -4)}xxxx` });
  const cases: [string, string, (h: Harness) => Record<string, string>, Uint8Array][] = [
    ["Health/Check ok", CHECK, () => ({}), EMPTY],
    [
      "Health/Check, content-type application/grpc+proto",
      CHECK,
      () => ({ "content-type": "application/grpc+proto" }),
      EMPTY,
    ],
    [
      "Health/Check, client accepts gzip (response grpc-encoding)",
      CHECK,
      () => ({ "grpc-accept-encoding": "identity,deflate,gzip" }),
      EMPTY,
    ],
    ["unknown service for Check: NOT_FOUND", CHECK, () => ({}), frame(Buffer.from([0x0a, 0x03, 0x66, 0x6f, 0x6f]))],
    ["no key: UNAUTHENTICATED with ErrorInfo", CURRENT, () => ({}), EMPTY],
    ["malformed key", CURRENT, () => ({ authorization: "Bearer nope" }), EMPTY],
    ["bad key", CURRENT, bad, EMPTY],
    [
      "invalid argument: BadRequest details",
      GET_TENANT,
      (h) => ({ authorization: `Bearer ${h.ownerKey}` }),
      frame(toBinary(GetTenantRequestSchema, create(GetTenantRequestSchema, { tenantId: "nope ü %" }))),
    ],
    ["unimplemented service", "/tenantd.v1.UsageService/GetUsageSummary", () => ({}), EMPTY],
    ["grpc-timeout 0: DEADLINE_EXCEEDED", CHECK, () => ({ "grpc-timeout": "0n" }), EMPTY],
    ["grpc-timeout malformed", CHECK, () => ({ "grpc-timeout": "soon" }), EMPTY],
    ["oversized message: RESOURCE_EXHAUSTED", CHECK, () => ({}), frame(Buffer.alloc(1024 * 1024 + 10, 0x41))],
    ["frame length beyond the limit", CHECK, () => ({}), Buffer.from([0, 0x7f, 0, 0, 0, 1, 2, 3])],
    ["truncated frame", CHECK, () => ({}), Buffer.from([0, 0, 0, 0, 9, 1, 2])],
    ["short prefix", CHECK, () => ({}), Buffer.from([0, 0])],
    ["empty body", CHECK, () => ({}), new Uint8Array(0)],
    ["two frames", CHECK, () => ({}), Buffer.concat([EMPTY, EMPTY])],
    ["undecodable message", CHECK, () => ({}), frame(Buffer.from([0x0a, 0x7f, 0x01]))],
    ["compressed flag without grpc-encoding", CHECK, () => ({}), frame(Buffer.from([1, 2, 3]), 1)],
    [
      "gzip request (served by connect on both)",
      CHECK,
      () => ({ "grpc-encoding": "gzip" }),
      frame(Buffer.from([1, 2, 3]), 1),
    ],
    ["unknown method", "/grpc.health.v1.Health/Nope", () => ({}), EMPTY],
  ];
  for (const [name, path, headers, body] of cases) {
    it(name, async () => {
      const [a, b] = await Promise.all([
        raw(fast.baseUrl, path, headers(fast), body),
        raw(slow.baseUrl, path, headers(slow), body),
      ]);
      expect(a).toEqual(b);
    });
  }

  it("the ErrorInfo case carries grpc-status-details-bin", async () => {
    const [a] = await both(CURRENT, {}, EMPTY);
    expect(a.trailers["grpc-status"]).toBe("16");
    expect(a.trailers["grpc-status-details-bin"]).toBeTypeOf("string");
    expect(a.headers["x-request-id"]).toBe("fast-path-test");
  });

  it("a tenant call: same header names (ratelimit-*, x-request-id) and grpc-status", async () => {
    const results: Raw[] = [];
    for (const h of [fast, slow]) {
      const { key } = await h.newTenant();
      results.push(await raw(h.baseUrl, CURRENT, { authorization: `Bearer ${key}` }, EMPTY));
    }
    const [a, b] = results as [Raw, Raw];
    expect(Object.keys(a.headers).sort()).toEqual(Object.keys(b.headers).sort());
    expect(a.headers["ratelimit-limit"]).toBeDefined();
    expect(a.trailers).toEqual(b.trailers);
    expect(a.trailers["grpc-status"]).toBe("0");
  });
});

describe("what stays on connect-node", () => {
  it("health Watch (server streaming) over gRPC", async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: fast.baseUrl }));
    const abort = new AbortController();
    for await (const r of client.watch({ service: "" }, { signal: abort.signal })) {
      expect(r.status).toBeGreaterThan(0);
      abort.abort();
      break;
    }
  });

  it("reflection (bidi streaming) through buf curl", async () => {
    const r = await bufCurl(["--http2-prior-knowledge", fast.baseUrl, "--list-services"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("grpc.health.v1.Health");
  });

  it("connect-node clients still work on the fast server (gRPC unary through the fast path)", async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: fast.baseUrl }));
    const r = await client.check({ service: "" });
    expect(r.status).toBeGreaterThan(0);
  });
});

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { TenantSchema } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { createHealthService } from "../../src/transport/health.js";
import {
  addLogFields,
  createLogger,
  logFieldsKey,
  REST_MARKER_HEADER,
  requestLogInterceptor,
} from "../../src/transport/logging.js";
import { createRestHandler, type RestHandler } from "../../src/transport/rest/handler.js";
import { createServer, startTestServer } from "../../src/transport/server.js";
import { captureLog, eventually, rpcLines, sleep } from "./helpers.js";

const KEY = `tdk_tenant_live_${"A1b2C3d4E5f6G7h8"}_${"x".repeat(32)}Ab12Cd`;

describe("createLogger", () => {
  it("writes one JSON object per line with time, level and msg", () => {
    const out: string[] = [];
    const log = createLogger("info", { write: (l: string) => out.push(l) });
    log.info("hello", { n: 1, big: 2n });
    expect(out).toHaveLength(1);
    expect(out[0]?.endsWith("\n")).toBe(true);
    expect(JSON.parse(out[0] as string)).toMatchObject({ level: "info", msg: "hello", n: 1, big: "2" });
    expect(Date.parse(JSON.parse(out[0] as string).time)).not.toBeNaN();
  });

  it("drops lines below its level, and everything when silent", () => {
    const out: string[] = [];
    const sink = { write: (l: string) => out.push(l) };
    const warn = createLogger("warn", sink);
    warn.debug("a");
    warn.info("b");
    warn.warn("c");
    warn.error("d");
    createLogger("silent", sink).error("e");
    expect(out.map((l) => JSON.parse(l).msg)).toEqual(["c", "d"]);
    expect(warn.enabled("info")).toBe(false);
  });

  it("never writes an API key or an authorization value, wherever it hides", () => {
    const out: string[] = [];
    const log = createLogger("debug", { write: (l: string) => out.push(l) });
    log.info(`verifying ${KEY}`, {
      authorization: `Bearer ${KEY}`,
      headers: { Authorization: "Basic dXNlcjpwYXNz" },
      nested: [{ note: `key=${KEY};` }],
      error: new Error(`bad key ${KEY}`, { cause: new Error(`inner ${KEY}`) }),
      other: "Bearer some-opaque-token",
    });
    const text = out.join("");
    expect(text).not.toContain(KEY);
    expect(text).not.toContain("dXNlcjpwYXNz");
    expect(text).not.toContain("some-opaque-token");
    const line = JSON.parse(out[0] as string);
    expect(line.authorization).toBe("[REDACTED]");
    expect(line.headers.Authorization).toBe("[REDACTED]");
    expect(line.nested[0].note).toBe("key=[REDACTED];");
    expect(line.error.message).toBe("bad key [REDACTED]");
    expect(line.error.cause.message).toBe("inner [REDACTED]");
  });

  it("survives cycles", () => {
    const out: string[] = [];
    const a: Record<string, unknown> = { name: "a" };
    a.self = a;
    createLogger("info", { write: (l: string) => out.push(l) }).info("cycle", { a });
    expect(JSON.parse(out[0] as string).a.self).toBe("[…]");
  });
});

describe("requestLogInterceptor", () => {
  it("adds fields other interceptors set, and ends stream lines when the stream ends", async () => {
    const { log, lines } = captureLog();
    const srv = await startTestServer({
      log,
      routes: (router) => {
        router.service(Health, {
          check: () => ({ status: Status.SERVING }),
          async *watch() {
            yield { status: Status.SERVING };
            await sleep(150);
            yield { status: Status.NOT_SERVING };
          },
        });
      },
      interceptors: [
        // Stands in for the auth interceptor.
        (next) => async (req) => {
          addLogFields(req.contextValues, { tenant_id: "ten_123", key_id: "key_456" });
          return next(req);
        },
      ],
    });
    try {
      const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
      await client.check({});
      const statuses = [];
      for await (const r of client.watch({})) statuses.push(r.status);
      expect(statuses).toHaveLength(2);
      await eventually(() => rpcLines(lines()).length === 2);
      const [check, watch] = rpcLines(lines());
      expect(check).toMatchObject({
        procedure: "grpc.health.v1.Health/Check",
        tenant_id: "ten_123",
        key_id: "key_456",
      });
      expect(watch).toMatchObject({ procedure: "grpc.health.v1.Health/Watch", code: "ok" });
      expect(watch?.duration_ms as number).toBeGreaterThanOrEqual(140);
    } finally {
      await srv.close();
    }
  });

  it("logs a stream the client cancels once, as canceled", async () => {
    const { log, lines } = captureLog();
    const health = createHealthService({ probes: {}, pollIntervalMs: 20 });
    const srv = await startTestServer({ log, routes: (router) => health.register(router) });
    try {
      const abort = new AbortController();
      const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
      await expect(
        (async () => {
          for await (const _ of client.watch({}, { signal: abort.signal })) abort.abort();
        })(),
      ).rejects.toThrow();
      await eventually(() => rpcLines(lines()).length > 0);
      await sleep(100); // a second line would have arrived by now
      expect(rpcLines(lines())).toEqual([
        expect.objectContaining({ procedure: "grpc.health.v1.Health/Watch", code: "canceled" }),
      ]);
    } finally {
      await srv.close();
    }
  });

  it("logs INTERNAL with its cause at error level while the client sees no cause", async () => {
    const { log, lines } = captureLog();
    const srv = await startTestServer({
      log,
      routes: (router) => {
        router.service(Health, {
          check: () => {
            throw new Error(`database exploded near ${KEY}`);
          },
        });
      },
    });
    try {
      const err = await createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }))
        .check({})
        .catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.Internal);
      expect((err as ConnectError).rawMessage).toBe("internal error");
      await eventually(() => rpcLines(lines()).length === 1);
      const [line] = rpcLines(lines());
      expect(line).toMatchObject({ level: "error", code: "internal" });
      expect(JSON.stringify(line)).toContain("database exploded near [REDACTED]");
    } finally {
      await srv.close();
    }
  });

  it("at LOG_LEVEL=warn: answered calls write no line, client errors neither, INTERNAL still does", async () => {
    const { log, lines } = captureLog("warn");
    const srv = await startTestServer({
      log,
      routes: (router) => {
        router.service(Health, {
          check: (req) => {
            if (req.service === "boom") throw new Error("database exploded");
            if (req.service === "missing") throw new ConnectError("no such service", Code.NotFound);
            return { status: 1 };
          },
        });
      },
    });
    try {
      const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
      for (let i = 0; i < 5; i++) await client.check({});
      await expect(client.check({ service: "missing" })).rejects.toThrow();
      await expect(client.check({ service: "boom" })).rejects.toThrow();
      await eventually(() => rpcLines(lines()).length === 1);
      await sleep(50); // any line of the earlier calls would be here by now
      expect(rpcLines(lines())).toEqual([
        expect.objectContaining({ level: "error", code: "internal", procedure: "grpc.health.v1.Health/Check" }),
      ]);
    } finally {
      await srv.close();
    }
  });

  it("works on its own (without createServer): id in context, header and error metadata", async () => {
    const { log, lines } = captureLog();
    const transport = createRouterTransport(
      (router) => {
        router.service(Health, {
          check: (req, ctx) => {
            if (req.service !== "") throw new ConnectError("nope", Code.NotFound);
            // The per-call fields object is live inside the call.
            expect(Object.isFrozen(ctx.values.get(logFieldsKey))).toBe(false);
            return { status: Status.SERVING };
          },
        });
      },
      { router: { interceptors: [requestLogInterceptor(log)] } },
    );
    const client = createClient(Health, transport);
    let header: Headers | undefined;
    await client.check({}, { onHeader: (h) => (header = h) });
    expect(header?.get("x-request-id")).toMatch(/^req_/);
    const err = await client.check({ service: "x" }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).metadata.get("x-request-id")).toMatch(/^req_[^,]+$/);
    expect(rpcLines(lines()).map((l) => l.code)).toEqual(["ok", "not_found"]);
  });

  it("is installed by createServer, which refuses a second copy", () => {
    const log = createLogger("silent");
    expect(() =>
      createServer({
        routes: () => {},
        interceptors: [requestLogInterceptor(log)],
        maxRequestBytes: 1024,
        requestTimeoutMs: 1000,
        log,
      }),
    ).toThrow(/installs the request log interceptor/);
  });

  it("has a frozen default for log fields, so writes outside a logged call cannot leak", () => {
    expect(Object.isFrozen(logFieldsKey.defaultValue)).toBe(true);
  });
});

describe("protocol of the request log line", () => {
  // The REST transcoder dispatches into Connect's own handler as a Connect JSON call, so the
  // content type alone would label REST calls "connect"; the transcoder marks its inner request.
  it("says rest for a REST call, and the true protocol for every RPC protocol", async () => {
    const { log, lines } = captureLog();
    let router: ConnectRouter | undefined;
    let rest: RestHandler | undefined;
    const srv = await startTestServer({
      log,
      routes: (r) => {
        router = r;
        r.service(TenantService, {
          getCurrentTenant: () => ({ tenant: create(TenantSchema, { id: "ten_log", name: "Log Co" }) }),
        });
      },
      fallback: (req, res) => {
        rest?.(req, res).then((handled) => {
          if (!handled) {
            res.writeHead(404);
            res.end();
          }
        });
      },
    });
    rest = createRestHandler({
      services: [TenantService],
      handlers: () => router?.handlers ?? [],
      maxRequestBytes: 1024 * 1024,
      contextValues: (req) => srv.server.contextValues(req),
    });
    try {
      const viaRest = await fetch(`${srv.baseUrl}/v1/tenant`);
      expect(viaRest.status).toBe(200);
      expect(await viaRest.json()).toMatchObject({ tenant: { id: "ten_log" } });
      const restId = viaRest.headers.get("x-request-id");

      // A client that sends the marker itself over gRPC or gRPC-Web does not change its label.
      const spoof = { headers: { [REST_MARKER_HEADER]: "rest" } };
      const ids: Record<string, string | null> = { rest: restId };
      const transports = {
        connect: createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
        grpc: createGrpcTransport({ baseUrl: srv.baseUrl }),
        "grpc-web": createGrpcWebTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
      };
      for (const [name, transport] of Object.entries(transports)) {
        await createClient(TenantService, transport).getCurrentTenant(
          {},
          { ...(name === "connect" ? {} : spoof), onHeader: (h) => (ids[name] = h.get("x-request-id")) },
        );
      }
      await eventually(() => rpcLines(lines()).length === 4);
      const byId = new Map(rpcLines(lines()).map((l) => [l.request_id, l]));
      for (const [protocol, id] of Object.entries(ids)) {
        expect(id, protocol).toMatch(/^req_/);
        expect(byId.get(id), protocol).toMatchObject({
          procedure: "tenantd.v1.TenantService/GetCurrentTenant",
          protocol,
          code: "ok",
        });
      }
      // One line per REST call: the interceptor's, not a second "http" line from the HTTP layer.
      expect(lines().filter((l) => l.request_id === restId)).toHaveLength(1);
    } finally {
      await srv.close();
    }
  });
});

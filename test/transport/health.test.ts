import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { createHealthService, healthHttpHandler, registerHealth } from "../../src/transport/health.js";
import { registerReflection } from "../../src/transport/reflection.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { sleep } from "./helpers.js";

// Readiness comes from the probes; gRPC Check/Watch/List and the HTTP probes agree with them.

/** Probe outcomes the tests switch at will. */
const backend = { postgres: "up" as "up" | "down" | "hang", redis: "up" as "up" | "down" | "hang" };
const probe = (name: keyof typeof backend) => async () => {
  if (backend[name] === "down") throw new Error(`${name} refused the connection`);
  if (backend[name] === "hang") await sleep(5000);
};

let srv: TestServer;
beforeAll(async () => {
  const health = createHealthService({
    probes: { postgres: probe("postgres"), redis: probe("redis") },
    probeTimeoutMs: 100,
    pollIntervalMs: 20,
    cacheMs: 0,
  });
  srv = await startTestServer({
    routes: (router) => {
      health.register(router);
      registerReflection(router);
    },
    fallback: (req, res) => {
      if (!health.handleHttp(req, res)) {
        res.writeHead(404);
        res.end();
      }
    },
  });
});
afterAll(() => srv.close());

const client = () => createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
const up = () => {
  backend.postgres = "up";
  backend.redis = "up";
};

describe("Check", () => {
  it("is SERVING for the server, each component and each served service when all probes pass", async () => {
    up();
    for (const service of [
      "",
      "tenantd.postgres",
      "tenantd.redis",
      "grpc.health.v1.Health",
      ServerReflection.typeName,
    ]) {
      expect((await client().check({ service })).status, service).toBe(Status.SERVING);
    }
  });

  it("is NOT_SERVING for the server and the failing component only", async () => {
    up();
    backend.redis = "down";
    expect((await client().check({ service: "" })).status).toBe(Status.NOT_SERVING);
    expect((await client().check({ service: "tenantd.redis" })).status).toBe(Status.NOT_SERVING);
    expect((await client().check({ service: "tenantd.postgres" })).status).toBe(Status.SERVING);
    expect((await client().check({ service: "grpc.health.v1.Health" })).status).toBe(Status.NOT_SERVING);
    up();
  });

  it("counts a probe slower than its timeout as failing, and answers within about the timeout", async () => {
    up();
    backend.postgres = "hang";
    const started = Date.now();
    expect((await client().check({ service: "tenantd.postgres" })).status).toBe(Status.NOT_SERVING);
    expect(Date.now() - started).toBeLessThan(1000);
    up();
  });

  it("is NOT_FOUND for an unknown service", async () => {
    const err = await client()
      .check({ service: "tenantd.mysql" })
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.NotFound);
  });
});

describe("Watch", () => {
  it("sends the current status, then every change", async () => {
    up();
    const abort = new AbortController();
    const seen: Status[] = [];
    const watching = (async () => {
      try {
        for await (const r of client().watch({ service: "tenantd.postgres" }, { signal: abort.signal })) {
          seen.push(r.status);
          if (seen.length === 1) backend.postgres = "down";
          if (seen.length === 2) backend.postgres = "up";
          if (seen.length === 3) abort.abort();
        }
      } catch (e) {
        if (ConnectError.from(e).code !== Code.Canceled) throw e;
      }
    })();
    await watching;
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
    up();
  });

  it("sends SERVICE_UNKNOWN for an unknown service and keeps the stream open", async () => {
    const abort = new AbortController();
    const it = client().watch({ service: "nope" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await it.next()).value?.status).toBe(Status.SERVICE_UNKNOWN);
    const next = it.next();
    const winner = await Promise.race([next.then(() => "message"), sleep(100).then(() => "open")]);
    expect(winner).toBe("open");
    abort.abort();
    await next.catch(() => undefined);
  });
});

describe("List", () => {
  it("lists the server, the components and the served services", async () => {
    up();
    const { statuses } = await client().list({});
    expect(Object.keys(statuses).sort()).toEqual(
      [
        "",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "tenantd.postgres",
        "tenantd.redis",
      ].sort(),
    );
    expect(Object.values(statuses).every((s) => s.status === Status.SERVING)).toBe(true);
  });
});

describe("HTTP probes", () => {
  it("/healthz is 200 whatever the backends", async () => {
    backend.postgres = "down";
    const res = await fetch(`${srv.baseUrl}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
    up();
  });

  it("/readyz is 200 with component states when ready", async () => {
    up();
    const res = await fetch(`${srv.baseUrl}/readyz`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({ status: "ready", components: { postgres: "ok", redis: "ok" } });
  });

  it("/readyz is 503 and names the failing component, without its error text", async () => {
    backend.postgres = "down";
    backend.redis = "hang";
    const res = await fetch(`${srv.baseUrl}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: "not_ready", components: { postgres: "failing", redis: "timeout" } });
    up();
  });

  it("refuses other methods", async () => {
    const res = await fetch(`${srv.baseUrl}/readyz`, { method: "POST" });
    expect(res.status).toBe(405);
  });
});

describe("registerHealth + healthHttpHandler", () => {
  it("register in one step and make a whole fallback (404 elsewhere) sharing the probes", async () => {
    let calls = 0;
    let health: ReturnType<typeof registerHealth> | undefined;
    const s = await startTestServer({
      routes: (router) => {
        health = registerHealth(router, {
          probes: {
            db: async () => {
              calls++;
            },
          },
          services: ["tenantd.v1.Extra"],
        });
      },
      fallback: (req, res) => healthHttpHandler(health as ReturnType<typeof registerHealth>)(req, res),
    });
    try {
      const c = createClient(Health, createGrpcTransport({ baseUrl: s.baseUrl }));
      expect((await c.check({ service: "tenantd.v1.Extra" })).status).toBe(Status.SERVING);
      expect((await fetch(`${s.baseUrl}/readyz`)).status).toBe(200);
      expect((await fetch(`${s.baseUrl}/other`)).status).toBe(404);
      // Both answers came from one probe round (cached), not one each.
      expect(calls).toBe(1);
    } finally {
      await s.close();
    }
  });
});

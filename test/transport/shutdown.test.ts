import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { createHealthService } from "../../src/transport/health.js";
import { startTestServer } from "../../src/transport/server.js";
import { sleep } from "./helpers.js";

// Graceful shutdown: stop accepting at once, let running calls finish within the grace period,
// and never hang on idle or stuck connections.

/** A Health service whose Check sleeps for `service` milliseconds (ignoring cancellation). */
async function slowServer() {
  return startTestServer({
    routes: (router) => {
      router.service(Health, {
        async check(req) {
          await sleep(Number(req.service || "0"));
          return { status: Status.SERVING };
        },
      });
    },
  });
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"));
  });
}

describe("close(graceMs)", () => {
  it.each([
    ["gRPC over h2c", (baseUrl: string) => createGrpcTransport({ baseUrl })],
    ["Connect over HTTP/1.1", (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "1.1" })],
  ])("lets an in-flight call finish (%s), then refuses new connections", async (_name, transport) => {
    const srv = await slowServer();
    const client = createClient(Health, transport(srv.baseUrl));
    const call = client.check({ service: "400" });
    await sleep(100); // the call is running on the server
    const started = Date.now();
    const closed = srv.close(5000);
    expect(await connectRefused(srv.port)).toBe(true);
    expect((await call).status).toBe(Status.SERVING);
    await closed;
    // Resolved when the last call ended, not at the end of the grace period.
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("does not hang on idle HTTP/2 and keep-alive HTTP/1.1 clients", async () => {
    const srv = await slowServer();
    // A raw session that stays open and idle, as a pooled gRPC channel does.
    const idle = http2.connect(srv.baseUrl);
    await new Promise<void>((resolve) => idle.once("connect", () => resolve()));
    idle.on("error", () => {});
    const grpc = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
    const h1 = createClient(Health, createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }));
    await grpc.check({});
    await h1.check({});
    const started = Date.now();
    await srv.close(10_000);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(idle.closed || idle.destroyed).toBe(true);
  });

  it("aborts calls still running when the grace period ends", async () => {
    const srv = await slowServer();
    const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
    const call = client.check({ service: "5000" }).catch((e: unknown) => ConnectError.from(e));
    await sleep(100);
    const started = Date.now();
    await srv.close(200);
    expect(Date.now() - started).toBeLessThan(1500);
    const err = await call;
    expect(err).toBeInstanceOf(ConnectError);
    expect([Code.Unavailable, Code.Canceled, Code.Internal]).toContain((err as ConnectError).code);
  });

  it("ends health Watch streams at once instead of waiting out the grace period", async () => {
    const health = createHealthService({ probes: {}, pollIntervalMs: 50 });
    const srv = await startTestServer({ routes: (router) => health.register(router) });
    const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
    const statuses: Status[] = [];
    const watching = (async () => {
      for await (const r of client.watch({ service: "" })) statuses.push(r.status);
    })();
    await sleep(100);
    const started = Date.now();
    await srv.close(10_000);
    await watching;
    expect(Date.now() - started).toBeLessThan(1000);
    // The last word of a draining server is NOT_SERVING.
    expect(statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });

  it("is idempotent", async () => {
    const srv = await slowServer();
    const a = srv.close(100);
    const b = srv.close(100);
    expect(a).toBe(b);
    await a;
  });
});

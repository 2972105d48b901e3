import * as http from "node:http";
import * as net from "node:net";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { createHealthService } from "../../src/transport/health.js";
import { requestIdKey } from "../../src/transport/logging.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { captureLog, eventually, rpcLines, sleep } from "./helpers.js";

// One port, four ways in: every protocol reaches the same handler, interceptors and limits.

const MAX_BYTES = 1024;

let srv: TestServer;
let logged: ReturnType<typeof captureLog>;
/** Request ids the handler saw, to compare with what the client received. */
const seenIds: string[] = [];

beforeAll(async () => {
  logged = captureLog();
  const health = createHealthService({ probes: { postgres: async () => {} } });
  srv = await startTestServer({
    log: logged.log,
    maxRequestBytes: MAX_BYTES,
    requestTimeoutMs: 300,
    routes: (router) => {
      health.register(router);
    },
    // Records the id the request log interceptor put into the context, from the inside.
    interceptors: [
      (next) => async (req) => {
        seenIds.push(req.contextValues.get(requestIdKey));
        return next(req);
      },
    ],
    fallback: (req, res) => {
      if (!health.handleHttp(req, res)) {
        res.writeHead(404);
        res.end();
      }
    },
  });
});
afterAll(() => srv.close());

const transports: Record<string, () => Transport> = {
  "gRPC over h2c": () => createGrpcTransport({ baseUrl: srv.baseUrl }),
  "Connect JSON over HTTP/1.1": () => createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
  "Connect JSON over h2c": () => createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "2" }),
  "Connect binary over HTTP/1.1": () =>
    createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  "gRPC-Web over HTTP/1.1": () => createGrpcWebTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
  "gRPC-Web over h2c": () => createGrpcWebTransport({ baseUrl: srv.baseUrl, httpVersion: "2" }),
};
const protocolOf: Record<string, string> = {
  "gRPC over h2c": "grpc",
  "Connect JSON over HTTP/1.1": "connect",
  "Connect JSON over h2c": "connect",
  "Connect binary over HTTP/1.1": "connect",
  "gRPC-Web over HTTP/1.1": "grpc-web",
  "gRPC-Web over h2c": "grpc-web",
};

describe.each(Object.keys(transports))("%s", (name) => {
  const client = () => createClient(Health, (transports[name] as () => Transport)());

  it("answers, with x-request-id and one log line", async () => {
    let header: Headers | undefined;
    const res = await client().check({ service: "" }, { onHeader: (h) => (header = h) });
    expect(res.status).toBe(Status.SERVING);
    const id = header?.get("x-request-id");
    expect(id).toMatch(/^req_[A-Za-z0-9_-]{16}$/);
    expect(seenIds).toContain(id);
    await eventually(() => rpcLines(logged.lines()).some((l) => l.request_id === id));
    const lines = rpcLines(logged.lines()).filter((l) => l.request_id === id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "info",
      procedure: "grpc.health.v1.Health/Check",
      protocol: protocolOf[name],
      code: "ok",
    });
    expect(typeof lines[0]?.duration_ms).toBe("number");
    expect(typeof lines[0]?.time).toBe("string");
  });

  it("returns x-request-id on errors too, and logs the code", async () => {
    const err = await client()
      .check({ service: "no.such.Service" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
    const id = (err as ConnectError).metadata.get("x-request-id");
    expect(id).toMatch(/^req_/);
    await eventually(() => rpcLines(logged.lines()).some((l) => l.request_id === id));
    expect(rpcLines(logged.lines()).filter((l) => l.request_id === id)).toEqual([
      expect.objectContaining({ code: "not_found", protocol: protocolOf[name] }),
    ]);
  });

  it("honours a valid incoming x-request-id", async () => {
    let header: Headers | undefined;
    await client().check(
      { service: "" },
      { headers: { "x-request-id": "trace.42_a-b" }, onHeader: (h) => (header = h) },
    );
    expect(header?.get("x-request-id")).toBe("trace.42_a-b");
  });

  it("replaces an invalid incoming x-request-id", async () => {
    let header: Headers | undefined;
    await client().check(
      { service: "" },
      { headers: { "x-request-id": "has spaces/and slashes" }, onHeader: (h) => (header = h) },
    );
    expect(header?.get("x-request-id")).toMatch(/^req_/);
  });

  it("refuses a request larger than maxRequestBytes with RESOURCE_EXHAUSTED, still with an id and a log line", async () => {
    const err = await client()
      .check({ service: "x".repeat(MAX_BYTES * 2) })
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    const id = (err as ConnectError).metadata.get("x-request-id");
    expect(id).toMatch(/^req_/);
    // Connect rejects the body before any interceptor runs; the HTTP layer logs it instead.
    await eventually(() => rpcLines(logged.lines()).some((l) => l.request_id === id));
    expect(rpcLines(logged.lines()).filter((l) => l.request_id === id)).toEqual([
      expect.objectContaining({ code: "resource_exhausted", procedure: "grpc.health.v1.Health/Check" }),
    ]);
  });
});

describe("deadlines", () => {
  let slow: TestServer;
  beforeAll(async () => {
    slow = await startTestServer({
      requestTimeoutMs: 200,
      routes: (router) => {
        router.service(Health, {
          // Ignores its signal on purpose: the ceiling must hold even for such handlers.
          async check(req) {
            await sleep(Number(req.service));
            return { status: Status.SERVING };
          },
        });
      },
    });
  });
  afterAll(() => slow.close());

  it("fails a call running past the server's ceiling with DEADLINE_EXCEEDED", async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: slow.baseUrl }));
    const started = Date.now();
    const err = await client.check({ service: "2000" }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(1500);
  });

  it("lets a client's shorter deadline win", async () => {
    const client = createClient(Health, createConnectTransport({ baseUrl: slow.baseUrl, httpVersion: "1.1" }));
    const started = Date.now();
    const err = await client.check({ service: "2000" }, { timeoutMs: 50 }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(190);
  });

  it("carries large messages and many concurrent calls on every protocol", async () => {
    // Whitespace around the number keeps the sleep short while making the message ~500 kB, far
    // more than the first chunk the protocol sniffer reads.
    const big = `${" ".repeat(500_000)}1`;
    for (const transport of [
      createGrpcTransport({ baseUrl: slow.baseUrl }),
      createConnectTransport({ baseUrl: slow.baseUrl, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: slow.baseUrl, httpVersion: "2" }),
    ]) {
      const client = createClient(Health, transport);
      const results = await Promise.all([
        client.check({ service: big }),
        ...Array.from({ length: 50 }, () => client.check({ service: "5" })),
      ]);
      expect(results.every((r) => r.status === Status.SERVING)).toBe(true);
    }
  });

  it("lets calls under the ceiling finish", async () => {
    const client = createClient(Health, createGrpcWebTransport({ baseUrl: slow.baseUrl, httpVersion: "1.1" }));
    expect((await client.check({ service: "20" })).status).toBe(Status.SERVING);
  });
});

describe("plain HTTP on the same port", () => {
  it("serves /healthz and an x-request-id through the fallback", async () => {
    const res = await fetch(`${srv.baseUrl}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("answers 404 for unknown paths", async () => {
    const res = await fetch(`${srv.baseUrl}/nope`);
    expect(res.status).toBe(404);
  });

  it("answers requests Connect cannot route (HTTP/1.0 without Host) with 400 instead of crashing", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(srv.port, "127.0.0.1", () =>
        s.write(
          "POST /grpc.health.v1.Health/Check HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ),
      );
      let data = "";
      s.on("data", (d) => {
        data += String(d);
      });
      s.on("close", () => resolve(data));
      s.on("error", reject);
    });
    expect(reply.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    expect((await fetch(`${srv.baseUrl}/healthz`)).status).toBe(200);
  });

  it("sends a client that starts like HTTP/2 but is not to the HTTP/1 server", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(srv.port, "127.0.0.1", () => s.write("PRI /x HTTP/1.1\r\nhost: x\r\n\r\n"));
      s.once("data", (d) => {
        resolve(String(d));
        s.destroy();
      });
      s.on("error", reject);
    });
    expect(reply.startsWith("HTTP/1.1 ")).toBe(true);
  });

  it("keeps HTTP/1.1 connections alive across requests and bodies larger than one TCP segment", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const body = JSON.stringify({ service: "y".repeat(200_000) });
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        statuses.push(
          await new Promise<number>((resolve, reject) => {
            const req = http.request(
              `${srv.baseUrl}/grpc.health.v1.Health/Check`,
              { method: "POST", agent, headers: { "content-type": "application/json" } },
              (res) => {
                res.resume();
                res.on("end", () => resolve(res.statusCode ?? 0));
              },
            );
            req.on("error", reject);
            req.end(i === 1 ? body : "{}");
          }),
        );
      }
      // 429 is the Connect protocol's HTTP status for RESOURCE_EXHAUSTED.
      expect(statuses).toEqual([200, 429, 200]);
    } finally {
      agent.destroy();
    }
  });
});

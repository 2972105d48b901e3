import * as http2 from "node:http2";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { CeilingTimer } from "../../src/transport/deadline.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { eventually, sleep } from "./helpers.js";

// The deadline interceptor (src/transport/deadline.ts) with its shared ceiling timer, on both of
// its paths: the gRPC fast path, where the call's signal is made only when a handler reads it, and
// connect-node (Connect protocol here), where it links a signal of its own. The handler is told
// what to do by the request's `service` field.

const CEILING_MS = 150;

/** What the handlers saw of their signal, by request. */
const seen = new Map<string, { reason?: unknown; abortedAt?: number; readAt?: number }>();

function handler(req: { service: string }, ctx: HandlerContext) {
  const [what, arg = ""] = req.service.split(":");
  const record = { readAt: undefined as number | undefined } as {
    reason?: unknown;
    abortedAt?: number;
    readAt?: number;
  };
  seen.set(arg, record);
  switch (what) {
    case "ignore":
      // Never looks at its signal: the ceiling must hold anyway.
      return sleep(Number(arg)).then(() => ({ status: Status.SERVING }));
    case "honour":
      // Waits for its signal to abort, and remembers why.
      return new Promise((_, reject) => {
        ctx.signal.addEventListener("abort", () => {
          record.reason = ctx.signal.reason;
          record.abortedAt = performance.now();
          reject(ctx.signal.reason);
        });
      });
    case "cleanup":
      // Answers at once, but hooks cleanup to its signal, which fires when the call is over.
      ctx.signal.addEventListener("abort", () => {
        record.reason = ctx.signal.reason;
      });
      return { status: Status.SERVING };
    case "late":
      // Reads its signal only after the ceiling has passed: it must already be aborted.
      return sleep(CEILING_MS + 100).then(() => {
        record.readAt = performance.now();
        record.reason = ctx.signal.aborted ? ctx.signal.reason : "not aborted";
        return { status: Status.SERVING };
      });
    default:
      return { status: Status.SERVING };
  }
}

let srv: TestServer;
beforeAll(async () => {
  srv = await startTestServer({
    requestTimeoutMs: CEILING_MS,
    routes: (router) => {
      router.service(Health, { check: (req, ctx) => handler(req, ctx) as never });
    },
  });
});
afterAll(() => srv.close());

const grpc = () => createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
const connect = () => createClient(Health, createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }));
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: unknown) => Code[ConnectError.from(e).code],
  );

describe("CeilingTimer", () => {
  it("expires entries in order with one timer, and never an entry that was removed", async () => {
    const timer = new CeilingTimer(40);
    const expired: number[] = [];
    const entries = Array.from({ length: 1000 }, (_, i) => ({
      at: 0,
      prev: null,
      next: null,
      queued: false,
      expire: () => expired.push(i),
    }));
    for (const e of entries) timer.add(e);
    // Remove every other one, and the first and the last (head and tail).
    for (let i = 0; i < entries.length; i += 2) timer.remove(entries[i] as (typeof entries)[number]);
    timer.remove(entries[999] as (typeof entries)[number]);
    expect(timer.size).toBe(499);
    await eventually(() => timer.size === 0, 2000);
    expect(expired).toEqual(Array.from({ length: 499 }, (_, k) => 2 * k + 1));
    // Removing an entry twice, or after it expired, is harmless.
    timer.remove(entries[1] as (typeof entries)[number]);
    timer.remove(entries[0] as (typeof entries)[number]);
    expect(timer.size).toBe(0);
  });
});

describe.each([
  ["gRPC fast path", grpc],
  ["connect-node", connect],
] as const)("the ceiling over %s", (_name, client) => {
  it("fails a handler that ignores its signal with DEADLINE_EXCEEDED, on time", async () => {
    const started = performance.now();
    expect(await codeOf(client().check({ service: "ignore:2000" }))).toBe("DeadlineExceeded");
    expect(performance.now() - started).toBeLessThan(CEILING_MS + 500);
  });

  it("aborts the signal of a handler that honours it, with the ceiling as the reason", async () => {
    const id = `h${Math.random()}`;
    const started = performance.now();
    expect(await codeOf(client().check({ service: `honour:${id}` }))).toBe("DeadlineExceeded");
    const r = seen.get(id);
    expect(ConnectError.from(r?.reason).code).toBe(Code.DeadlineExceeded);
    expect(ConnectError.from(r?.reason).rawMessage).toContain(`${CEILING_MS} ms`);
    expect((r?.abortedAt ?? Number.POSITIVE_INFINITY) - started).toBeGreaterThanOrEqual(CEILING_MS - 5);
  });

  it("a signal read after the ceiling is already aborted with it", async () => {
    const id = `l${Math.random()}`;
    expect(await codeOf(client().check({ service: `late:${id}` }))).toBe("DeadlineExceeded");
    await eventually(() => seen.get(id)?.readAt !== undefined);
    expect(ConnectError.from(seen.get(id)?.reason).code).toBe(Code.DeadlineExceeded);
  });

  it("the signal fires when the call is over, so cleanup hooked to it runs", async () => {
    const id = `c${Math.random()}`;
    expect(await codeOf(client().check({ service: `cleanup:${id}` }))).toBe("ok");
    await eventually(() => seen.get(id)?.reason !== undefined);
  });

  it("many calls under the ceiling all finish", async () => {
    const codes = await Promise.all(
      Array.from({ length: 200 }, (_, i) => codeOf(client().check({ service: `ignore:${i % 20}` }))),
    );
    expect(new Set(codes)).toEqual(new Set(["ok"]));
  });
});

/** A raw HTTP/2 gRPC call; resolves with the trailers (or headers, for a trailers-only answer). */
function rawCall(headers: Record<string, string>, body: Uint8Array, resetAfterMs?: number) {
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const session = http2.connect(srv.baseUrl);
    session.once("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    let out: Record<string, unknown> = {};
    req.on("response", (h) => {
      out = { ...h };
    });
    req.on("trailers", (t) => {
      out = { ...out, ...t };
    });
    req.on("data", () => {});
    req.once("close", () => {
      session.close();
      resolve(out);
    });
    req.once("error", () => {});
    req.end(body);
    if (resetAfterMs !== undefined) setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), resetAfterMs);
  });
}

function frame(service: string): Uint8Array {
  const s = Buffer.from(service);
  const msg = Buffer.concat([Buffer.from([0x0a, s.length]), s]);
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

describe("the gRPC fast path's own deadline and resets", () => {
  it("a shorter grpc-timeout wins over the ceiling, even when the handler ignores its signal", async () => {
    const started = performance.now();
    const t = await rawCall({ "grpc-timeout": "30m" }, frame("ignore:2000"));
    expect(t["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    expect(performance.now() - started).toBeLessThan(CEILING_MS);
  });

  it("a client reset aborts the handler's signal with CANCELED", async () => {
    const id = `r${Math.random()}`;
    await rawCall({}, frame(`honour:${id}`), 20);
    await eventually(() => seen.get(id)?.reason !== undefined);
    expect(ConnectError.from(seen.get(id)?.reason).code).toBe(Code.Canceled);
  });
});

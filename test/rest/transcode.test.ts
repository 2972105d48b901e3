// The REST transcoder end to end against a test-only service whose rules use every grammar
// feature (proto-test/tenantd/testing/v1/transcode.proto), mounted through createServer like
// tenantd, and called with plain fetch: routes, request assembly, response shape, errors.
import * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { BookSchema, Genre, TranscodeService } from "../../gen/tenantd/testing/v1/transcode_pb.js";
import { createRestHandler, type RestHandler, writeNotFound } from "../../src/transport/rest/handler.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";

let server: TestServer;
let rest: RestHandler;
const seen: string[] = [];

// Stands in for tenantd's interceptors: proves REST calls go through the server's chain.
const marker: Interceptor = (next) => async (req) => {
  seen.push(`${req.method.name} ${req.header.get("content-type")}`);
  if (req.header.get("x-deny") !== null) {
    throw new ConnectError("denied by interceptor", Code.PermissionDenied);
  }
  const res = await next(req);
  res.header.set("x-intercepted", req.method.name);
  return res;
};

beforeAll(async () => {
  let router: ConnectRouter | undefined;
  server = await startTestServer({
    routes: (r) => {
      router = r;
      r.service(TranscodeService, {
        getBook: (req) => ({ name: req.name, title: "T", pages: 10n, genre: Genre.FICTION }),
        createBook: (req) => {
          const book = req.book ?? create(BookSchema);
          book.name = `${req.parent}/books/new${req.requestId ? `-${req.requestId}` : ""}`;
          return book;
        },
        updateBook: (req) => {
          const book = req.book ?? create(BookSchema);
          book.title = `${book.title}|${req.updateMask?.paths.join(",") ?? ""}`;
          return book;
        },
        getFile: (req) => ({ path: req.path }),
        archiveBook: (req) => ({ book: { name: req.name, archived: true }, note: req.reason }),
        echo: (req, ctx) => ({
          request: req,
          headers: {
            authorization: ctx.requestHeader.get("authorization") ?? "",
            "x-custom": ctx.requestHeader.get("x-custom") ?? "",
            "connect-timeout-ms": ctx.requestHeader.get("connect-timeout-ms") ?? "",
          },
        }),
        fail: (req, ctx) => {
          ctx.responseHeader.set("ratelimit-limit", "10");
          const details: ConstructorParameters<typeof ConnectError>[3] = [
            { desc: ErrorInfoSchema, value: { reason: req.reason, domain: "test", metadata: { a: "b" } } },
          ];
          if (req.field) {
            details.push({
              desc: BadRequestSchema,
              value: { fieldViolations: [{ field: req.field, description: "bad" }] },
            });
          }
          if (req.retryAfterSeconds > 0n) {
            details.push({
              desc: RetryInfoSchema,
              value: { retryDelay: { seconds: req.retryAfterSeconds, nanos: 1 } },
            });
          }
          throw new ConnectError(`failing with ${req.code}`, req.code as Code, undefined, details);
        },
      });
    },
    interceptors: [marker],
    maxRequestBytes: 4096,
    fallback: (req, res) => {
      rest(req, res).then((handled) => handled || writeNotFound(res));
    },
  });
  rest = createRestHandler({
    services: [TranscodeService],
    handlers: () => router?.handlers ?? [],
    maxRequestBytes: 4096,
    contextValues: (req) => server.server.contextValues(req),
    errorDomain: "test",
  });
});
afterAll(() => server.close());

async function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] ??= "application/json";
  }
  const res = await fetch(server.baseUrl + path, init);
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : {}, headers: res.headers };
}

function reasonOf(json: Record<string, unknown>): string | undefined {
  const details = json.details as { "@type": string; reason?: string }[];
  return details.find((d) => d["@type"] === "type.googleapis.com/google.rpc.ErrorInfo")?.reason;
}

describe("routes", () => {
  it("binds a multi-segment variable and emits unpopulated fields", async () => {
    const r = await call("GET", "/v1/shelves/s1/books/b1");
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      name: "shelves/s1/books/b1",
      title: "T",
      pages: "10",
      genre: "GENRE_FICTION",
      authors: [],
      archived: false,
    });
    expect(r.headers.get("content-type")).toMatch(/^application\/json/);
  });

  it.each([
    ["/v1/shelves/s%2F1/books/b1", "shelves/s%2F1/books/b1"],
    ["/v1/shelves/s%201/books/b%C3%A9", "shelves/s 1/books/bé"],
  ])("decodes %s keeping %%2F in a multi-segment variable", async (path, name) => {
    const r = await call("GET", path);
    expect(r.status).toBe(200);
    expect(r.json.name).toBe(name);
  });

  it("decodes %2F fully in a single-segment variable", async () => {
    const r = await call("GET", "/v1/echo/a%2Fb");
    expect((r.json.request as Record<string, unknown>).id).toBe("a/b");
  });

  it("binds ** across segments, zero or more", async () => {
    expect((await call("GET", "/v1/files/a/b%2Fc/d.txt")).json.path).toBe("a/b%2Fc/d.txt");
    expect((await call("GET", "/v1/files/x")).json.path).toBe("x");
    expect((await call("GET", "/v1/files")).json.path).toBe("");
  });

  it("matches a bare * segment without binding it", async () => {
    const r = await call("GET", "/v1/any/whatever/echo/e2");
    expect(r.status).toBe(200);
    expect((r.json.request as Record<string, unknown>).id).toBe("e2");
  });

  it("serves additional bindings", async () => {
    const r = await call("POST", "/v1/books", { title: "B" });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe("/books/new");
  });

  it("routes a :verb and returns only response_body", async () => {
    const r = await call("POST", "/v1/shelves/s1/books/b1:archive", { reason: "old" });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      name: "shelves/s1/books/b1",
      title: "",
      pages: "0",
      genre: "GENRE_UNSPECIFIED",
      authors: [],
      archived: true,
    });
  });

  it.each([
    ["trailing slash", "GET", "/v1/shelves/s1/books/b1/"],
    ["double slash", "GET", "/v1/shelves//books/b1"],
    ["unknown path", "GET", "/v2/nothing"],
    ["unknown verb", "POST", "/v1/books:burn"],
  ])("answers 404 for a %s", async (_, method, path) => {
    const r = await call(method, path);
    expect(r.status).toBe(404);
    expect(r.json.code).toBe(Code.NotFound);
    expect(reasonOf(r.json)).toBe("ROUTE_NOT_FOUND");
  });

  it("answers 405 with Allow for another method", async () => {
    const r = await call("DELETE", "/v1/shelves/s1/books/b1");
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("GET, PATCH");
    expect(r.json.code).toBe(Code.Unimplemented);
  });

  it("refuses a malformed escape in a path value", async () => {
    const r = await call("GET", "/v1/shelves/s1/books/b%zz");
    expect(r.status).toBe(400);
    expect(reasonOf(r.json)).toBe("REQUEST_MALFORMED");
  });

  it("leaves RPC protocols to the adapter", async () => {
    const r = await fetch(`${server.baseUrl}/v1/echo/e1`, {
      method: "POST",
      headers: { "content-type": "application/grpc" },
      body: "",
    });
    expect(r.status).toBe(404);
    const c = await fetch(`${server.baseUrl}/tenantd.testing.v1.TranscodeService/GetFile`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path: "p" }),
    });
    expect(await c.json()).toEqual({ path: "p" });
  });

  it("works over h2c", async () => {
    const session = http2.connect(server.baseUrl);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({ ":method": "GET", ":path": "/v1/files/h2/c" });
        let status = 0;
        let body = "";
        req.on("response", (h) => {
          status = Number(h[":status"]);
        });
        req.setEncoding("utf8");
        req.on("data", (d: string) => {
          body += d;
        });
        req.on("end", () => resolve({ status, body }));
        req.on("error", reject);
        req.end();
      });
      expect(status).toBe(200);
      expect(JSON.parse(body)).toEqual({ path: "h2/c" });
    } finally {
      session.close();
    }
  });
});

describe("request assembly", () => {
  it("puts the body into the body field and path values into fields", async () => {
    const r = await call("POST", "/v1/shelves/s1/books?requestId=r1", {
      title: "X",
      genre: "genre_history",
      pages: "9007199254740993",
      authors: ["a", "b"],
    });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      name: "shelves/s1/books/new-r1",
      genre: "GENRE_HISTORY",
      pages: "9007199254740993",
      authors: ["a", "b"],
    });
  });

  it("binds a nested path variable into the body message, with a FieldMask query parameter", async () => {
    const r = await call("PATCH", "/v1/shelves/s1/books/b1?update_mask=title,pages", { title: "New" });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ name: "shelves/s1/books/b1", title: "New|title,pages" });
  });

  it("accepts a body that repeats the path value, refuses one that contradicts it", async () => {
    expect((await call("PATCH", "/v1/shelves/s1/books/b1", { name: "shelves/s1/books/b1" })).status).toBe(200);
    const r = await call("PATCH", "/v1/shelves/s1/books/b1", { name: "shelves/s9/books/b9" });
    expect(r.status).toBe(400);
  });

  it("decodes every kind of query parameter", async () => {
    const q = [
      "big=9007199254740993",
      "small=-5",
      "ratio=0.5",
      "flag=true",
      "color=green",
      "tags=a",
      "tags=b%20c",
      "nums=1",
      "nums=18014398509481985",
      "colors=red",
      "colors=GREEN",
      "colors=1",
      "nested.label=L+x",
      "nested.count=3",
      "nested.inner.deep=D",
      "at=2024-01-02T03:04:05Z",
      "ttl=1.5s",
      "mask=a,b.c",
      "wrapped=7",
      "data=aGk",
      "opt=o",
      "unsigned=18446744073709551615",
    ].join("&");
    const r = await call("GET", `/v1/echo/e1?${q}`);
    expect(r.status).toBe(200);
    expect(r.json.request).toEqual({
      id: "e1",
      big: "9007199254740993",
      small: -5,
      ratio: 0.5,
      flag: true,
      color: "GREEN",
      tags: ["a", "b c"],
      nums: ["1", "18014398509481985"],
      colors: ["RED", "GREEN", "RED"],
      nested: { label: "L x", count: "3", inner: { deep: "D" } },
      at: "2024-01-02T03:04:05Z",
      ttl: "1.500s",
      mask: "a,b.c",
      wrapped: "7",
      labels: {},
      data: "aGk=",
      opt: "o",
      unsigned: "18446744073709551615",
    });
    expect(r.json.zero).toBe(0);
    expect(r.json.emptyList).toEqual([]);
  });

  it("accepts proto names in the query and the body", async () => {
    const q = await call("POST", "/v1/shelves/s1/books?request_id=r2", { title: "t" });
    expect(q.json.name).toBe("shelves/s1/books/new-r2");
    const b = await call("POST", "/v1/fail", { code: Code.ResourceExhausted, reason: "R", retry_after_seconds: "2" });
    expect(b.headers.get("retry-after")).toBe("3");
  });

  it("takes a repeated field from a JSON array body", async () => {
    const r = await call("PUT", "/v1/echo/e1/tags", ["x", "y"]);
    expect(r.status).toBe(200);
    expect((r.json.request as Record<string, unknown>).tags).toEqual(["x", "y"]);
  });

  it("takes a message field from the body, and other fields from the query", async () => {
    const r = await call("PUT", "/v1/echo/e1/nested?small=2", { label: "l", inner: { deep: "d" } });
    expect(r.status).toBe(200);
    expect(r.json.request).toMatchObject({ small: 2, nested: { label: "l", inner: { deep: "d" } } });
  });

  it.each([
    ["unknown query parameter", "GET", "/v1/echo/e1?bogus=1", undefined],
    ["unknown nested query parameter", "GET", "/v1/echo/e1?nested.bogus=1", undefined],
    ["query parameter for a path-bound field", "GET", "/v1/echo/e1?id=x", undefined],
    ["query parameter for the body field", "PUT", "/v1/echo/e1/tags?tags=x", ["y"]],
    ["query parameter with body *", "POST", "/v1/shelves/s1/books/b1:archive?reason=x", {}],
    ["query parameter for a map", "GET", "/v1/echo/e1?labels=x", undefined],
    ["query parameter for a message", "GET", "/v1/echo/e1?nested=x", undefined],
    ["singular query parameter twice", "GET", "/v1/echo/e1?small=1&small=2", undefined],
    ["bad bool", "GET", "/v1/echo/e1?flag=maybe", undefined],
    ["bad int", "GET", "/v1/echo/e1?small=abc", undefined],
    ["int64 out of range", "GET", "/v1/echo/e1?big=99999999999999999999", undefined],
    ["bad enum", "GET", "/v1/echo/e1?color=purple", undefined],
    ["bad timestamp", "GET", "/v1/echo/e1?at=yesterday", undefined],
    ["malformed query escape", "GET", "/v1/echo/e1?tags=%zz", undefined],
    ["unknown body field", "POST", "/v1/echo/e1", { bogus: 1 }],
    ["unknown nested body field", "POST", "/v1/echo/e1", { nested: { bogus: 1 } }],
    [
      "a field under its JSON and its proto name",
      "POST",
      "/v1/fail",
      { retry_after_seconds: "1", retryAfterSeconds: "2" },
    ],
    ["bad enum in body", "POST", "/v1/echo/e1", { color: "purple" }],
    ["array for a singular message", "POST", "/v1/echo/e1", { nested: [] }],
    ["malformed JSON", "POST", "/v1/echo/e1", "{not json"],
    ["JSON that is not an object", "POST", "/v1/echo/e1", "[1]"],
    ["a body on a route without one", "DELETE", "/v1/echo/e1", undefined],
  ])("refuses %s with 400 REQUEST_MALFORMED", async (_, method, path, body) => {
    const r = await call(method, path, body);
    if (method === "DELETE") {
      // Not a route at all: DELETE has no binding on /v1/echo/{id}.
      expect(r.status).toBe(405);
      return;
    }
    expect(r.status).toBe(400);
    expect(r.json.code).toBe(Code.InvalidArgument);
    expect(reasonOf(r.json)).toBe("REQUEST_MALFORMED");
    expect(typeof r.json.message).toBe("string");
  });

  it("lets a verb-less variable capture a colon", async () => {
    // No `:burn` route exists, so `b1:burn` is just the value of {name=shelves/*/books/*}.
    const r = await call("GET", "/v1/shelves/s1/books/b1:burn");
    expect(r.json.name).toBe("shelves/s1/books/b1:burn");
  });

  it("refuses a body that is not JSON, or too large", async () => {
    const t = await call("POST", "/v1/echo/e1", "x=1", { "content-type": "application/x-www-form-urlencoded" });
    expect(t.status).toBe(415);
    const big = await call("POST", "/v1/echo/e1", { tags: ["x".repeat(5000)] });
    expect(big.status).toBe(413);
    expect(big.json.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(big.json)).toBe("REQUEST_TOO_LARGE");
  });

  it("forwards the caller's headers and deadline to the handler", async () => {
    const r = await call("GET", "/v1/echo/e1", undefined, {
      authorization: "Bearer abc",
      "x-custom": "v",
      "grpc-timeout": "2S",
    });
    expect(r.json.headers).toEqual({ authorization: "Bearer abc", "x-custom": "v", "connect-timeout-ms": "2000" });
  });
});

describe("one code path", () => {
  it("runs the server's interceptors and returns their headers", async () => {
    seen.length = 0;
    const r = await call("GET", "/v1/files/f");
    expect(r.headers.get("x-intercepted")).toBe("GetFile");
    expect(seen).toEqual(["GetFile application/json"]);
    const denied = await call("GET", "/v1/files/f", undefined, { "x-deny": "1" });
    expect(denied.status).toBe(403);
    expect(denied.json.code).toBe(Code.PermissionDenied);
  });

  it("shares the request id the HTTP layer assigned", async () => {
    const r = await call("GET", "/v1/files/f", undefined, { "x-request-id": "req-rest-1" });
    expect(r.headers.get("x-request-id")).toBe("req-rest-1");
  });
});

describe("errors", () => {
  it.each([
    [Code.InvalidArgument, "OTHER", 400],
    [Code.InvalidArgument, "FIELD_INVALID", 422],
    [Code.FailedPrecondition, "FIELD_IMMUTABLE", 422],
    [Code.FailedPrecondition, "STATE_CONFLICT", 400],
    [Code.OutOfRange, "X", 400],
    [Code.Unauthenticated, "KEY_MISSING", 401],
    [Code.PermissionDenied, "PERMISSION_MISSING", 403],
    [Code.NotFound, "RESOURCE_NOT_FOUND", 404],
    [Code.AlreadyExists, "RESOURCE_EXISTS", 409],
    [Code.Aborted, "ETAG_MISMATCH", 409],
    [Code.ResourceExhausted, "RATE_LIMITED", 429],
    [Code.Canceled, "X", 499],
    [Code.Unimplemented, "NOT_IMPLEMENTED", 501],
    [Code.Internal, "INTERNAL_ERROR", 500],
    [Code.Unavailable, "BACKEND_UNAVAILABLE", 503],
    [Code.DeadlineExceeded, "DEADLINE_EXCEEDED", 504],
  ])("maps code %i (%s) to HTTP %i", async (code, reason, status) => {
    const r = await call("POST", "/v1/fail", { code, reason });
    expect(r.status).toBe(status);
    expect(r.json.code).toBe(code);
    expect(r.json.details).toEqual([
      { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason, domain: "test", metadata: { a: "b" } },
    ]);
  });

  it("renders every detail as google.rpc.Status JSON", async () => {
    const r = await call("POST", "/v1/fail", { code: Code.InvalidArgument, reason: "FIELD_INVALID", field: "title" });
    expect(r.status).toBe(422);
    expect(r.json).toEqual({
      code: 3,
      message: "failing with 3",
      details: [
        {
          "@type": "type.googleapis.com/google.rpc.ErrorInfo",
          reason: "FIELD_INVALID",
          domain: "test",
          metadata: { a: "b" },
        },
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "title", description: "bad" }],
        },
      ],
    });
  });

  it("sends Retry-After from RetryInfo and passes RateLimit-* headers through", async () => {
    const r = await call("POST", "/v1/fail", {
      code: Code.ResourceExhausted,
      reason: "RATE_LIMITED",
      retryAfterSeconds: 3,
    });
    expect(r.status).toBe(429);
    expect(r.headers.get("retry-after")).toBe("4");
    expect(r.headers.get("ratelimit-limit")).toBe("10");
  });
});

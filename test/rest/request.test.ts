// Query decoding and request assembly, without a server: the JSON handed to Connect.
import { describe, expect, it } from "vitest";
import { TranscodeService } from "../../gen/tenantd/testing/v1/transcode_pb.js";
import { assembleRequest, canonicalMessage, parseQuery, RequestError } from "../../src/transport/rest/request.js";
import { buildRouter } from "../../src/transport/rest/router.js";

const router = buildRouter([TranscodeService]);
function assemble(method: string, url: string, body?: unknown) {
  const [path = "", query = ""] = url.split("?");
  const hit = router.lookup(method, path);
  if (!hit || !("binding" in hit)) throw new Error(`no route for ${method} ${path}`);
  return assembleRequest(hit.binding, hit.vars, query, body as never);
}

describe("parseQuery", () => {
  it.each([
    ["", []],
    ["a=1", [["a", "1"]]],
    [
      "a=1&a=2",
      [
        ["a", "1"],
        ["a", "2"],
      ],
    ],
    ["a", [["a", ""]]],
    ["a=", [["a", ""]]],
    [
      "a=x+y&b=%2B",
      [
        ["a", "x y"],
        ["b", "+"],
      ],
    ],
    ["a.b=%E2%82%AC", [["a.b", "€"]]],
    [
      "a=1&&b=2",
      [
        ["a", "1"],
        ["b", "2"],
      ],
    ],
    ["a=b=c", [["a", "b=c"]]],
  ])("%j", (q, pairs) => {
    expect(parseQuery(q)).toEqual(pairs);
  });

  it.each(["a=%zz", "a=%", "%zz=1", "a=%C3"])("refuses %j", (q) => {
    expect(() => parseQuery(q)).toThrow(RequestError);
  });
});

describe("assembleRequest", () => {
  it.each([
    ["GET", "/v1/echo/e1?small=5", undefined, { id: "e1", small: "5" }],
    ["GET", "/v1/echo/e1?big=9223372036854775807", undefined, { id: "e1", big: "9223372036854775807" }],
    ["GET", "/v1/echo/e1?flag=false", undefined, { id: "e1", flag: false }],
    ["GET", "/v1/echo/e1?color=Red", undefined, { id: "e1", color: "RED" }],
    ["GET", "/v1/echo/e1?color=2", undefined, { id: "e1", color: 2 }],
    ["GET", "/v1/echo/e1?colors=red&colors=green", undefined, { id: "e1", colors: ["RED", "GREEN"] }],
    ["GET", "/v1/echo/e1?nested.inner.deep=x", undefined, { id: "e1", nested: { inner: { deep: "x" } } }],
    ["GET", "/v1/echo/e1?at=2024-01-01T00:00:00Z", undefined, { id: "e1", at: "2024-01-01T00:00:00Z" }],
    ["GET", "/v1/echo/e1?ttl=3s&mask=a,b", undefined, { id: "e1", ttl: "3s", mask: "a,b" }],
    ["GET", "/v1/echo/e1?wrapped=5", undefined, { id: "e1", wrapped: "5" }],
    ["PUT", "/v1/echo/e1/tags", ["a"], { id: "e1", tags: ["a"] }],
    [
      "POST",
      "/v1/echo/e1",
      { color: "green", nested: { label: "l" } },
      { id: "e1", color: "GREEN", nested: { label: "l" } },
    ],
    ["POST", "/v1/echo/e1", { id: "e1" }, { id: "e1" }],
    ["POST", "/v1/echo/e1", undefined, { id: "e1" }],
    ["PATCH", "/v1/shelves/a/books/b", { title: "t" }, { book: { title: "t", name: "shelves/a/books/b" } }],
    [
      "POST",
      "/v1/shelves/a/books",
      { genre: "genre_fiction" },
      { parent: "shelves/a", book: { genre: "GENRE_FICTION" } },
    ],
    ["GET", "/v1/files/a/b", undefined, { path: "a/b" }],
  ])("%s %s %j", (method, url, body, json) => {
    expect(assemble(method, url, body)).toEqual(json);
  });

  it.each([
    ["GET", "/v1/echo/e1?nope=1", undefined, /unknown query parameter/],
    ["GET", "/v1/echo/e1?id=x", undefined, /path-bound/],
    ["GET", "/v1/echo/e1?nested=x", undefined, /cannot be set from a query/],
    ["GET", "/v1/echo/e1?labels=x", undefined, /map fields/],
    ["GET", "/v1/echo/e1?small=1&small=2", undefined, /twice/],
    ["GET", "/v1/echo/e1?flag=yes", undefined, /true or false/],
    ["GET", "/v1/echo/e1?color=blue", undefined, /not a value/],
    ["PUT", "/v1/echo/e1/tags?tags=x", ["y"], /body field/],
    ["POST", "/v1/echo/e1?small=1", {}, /body binds every field/],
    ["PATCH", "/v1/shelves/a/books/b?book.title=x", {}, /body field/],
    ["POST", "/v1/echo/e1", { id: "other" }, /bound by the path/],
    ["POST", "/v1/echo/e1", { nope: 1 }, /unknown field "nope"/],
    ["POST", "/v1/echo/e1", { nested: { inner: { nope: 1 } } }, /unknown field "nested.inner.nope"/],
    ["POST", "/v1/echo/e1", { colors: "red" }, /expected a JSON array/],
    ["POST", "/v1/echo/e1", { nested: 5 }, /expected a JSON object/],
    ["POST", "/v1/echo/e1", [], /expected a JSON object/],
    ["POST", "/v1/echo/e1", null, /got null/],
    ["GET", "/v1/echo/e1", {}, /takes no request body/],
  ])("refuses %s %s %j", (method, url, body, message) => {
    expect(() => assemble(method, url, body)).toThrow(RequestError);
    expect(() => assemble(method, url, body)).toThrow(message);
  });

  it("limits nesting depth", () => {
    const input = TranscodeService.method.echo.input;
    // Depth counts the objects nested below the body's top level: here `nested` is 1, `inner` 2.
    expect(() => canonicalMessage(input, { nested: { inner: { deep: "x" } } }, "", 0, 1)).toThrow(/deeper than 1/);
    expect(canonicalMessage(input, { nested: { inner: { deep: "x" } } }, "", 0, 2)).toBeTruthy();
  });
});

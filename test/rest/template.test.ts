// The path template grammar (google/api/http.proto) and its matching semantics, table-driven.
import { describe, expect, it } from "vitest";
import {
  decodePathValue,
  EscapeError,
  matchTemplate,
  parseTemplate,
  TemplateError,
} from "../../src/transport/rest/template.js";

describe("parseTemplate", () => {
  it.each([
    ["/v1/tenants", "/v1/tenants", [], ""],
    ["/v1/tenants/{tenant_id}", "/v1/tenants/*", [["tenant_id", 2, 3]], ""],
    ["/v1/tenants/{tenant_id=*}", "/v1/tenants/*", [["tenant_id", 2, 3]], ""],
    ["/v1/{name=tenants/*/keys/*}", "/v1/tenants/*/keys/*", [["name", 1, 5]], ""],
    ["/v1/files/{path=**}", "/v1/files/**", [["path", 2, undefined]], ""],
    ["/v1/{name=shelves/*/files/**}", "/v1/shelves/*/files/**", [["name", 1, undefined]], ""],
    ["/v1/{book.name=shelves/*}", "/v1/shelves/*", [["book.name", 1, 3]], ""],
    ["/v1/keys:verify", "/v1/keys:verify", [], "verify"],
    [
      "/v1/tenants/{tenant_id}/keys/{key_id}:rotate",
      "/v1/tenants/*/keys/*:rotate",
      [
        ["tenant_id", 2, 3],
        ["key_id", 4, 5],
      ],
      "rotate",
    ],
    ["/v1/{name=a/*}:do", "/v1/a/*:do", [["name", 1, 3]], "do"],
    ["/v1/*/x", "/v1/*/x", [], ""],
    ["/v1/**", "/v1/**", [], ""],
    ["/v1/a%20b", "/v1/a b", [], ""],
    ["/v1/audit-events/a.b~c", "/v1/audit-events/a.b~c", [], ""],
  ])("parses %s", (source, key, vars, verb) => {
    const t = parseTemplate(source);
    expect(t.key).toBe(key);
    expect(t.verb).toBe(verb);
    expect(t.variables.map((v) => [v.fieldPath.join("."), v.start, v.end])).toEqual(vars);
  });

  it("gives equivalent templates the same key", () => {
    expect(parseTemplate("/v1/{a}/x").key).toBe(parseTemplate("/v1/{b=*}/x").key);
    expect(parseTemplate("/v1/{a=x/*}").key).toBe(parseTemplate("/v1/x/{b}").key);
  });

  it.each([
    ["", "must start with '/'"],
    ["v1/tenants", "must start with '/'"],
    ["/", "empty segment"],
    ["/v1/", "empty segment"],
    ["/v1//x", "empty segment"],
    ["/v1/{id", "unbalanced '{'"],
    ["/v1/id}", "unbalanced '}'"],
    ["/v1/{a={b}}", "nested variables"],
    ["/v1/{}", "bad field path"],
    ["/v1/{a.}", "bad field path"],
    ["/v1/{1a}", "bad field path"],
    ["/v1/{a=}", "empty segment"],
    ["/v1/{a}/{a}", "appears twice"],
    ["/v1/**/x", "'**' must be the last segment"],
    ["/v1/{a=**}/x", "'**' must be the last segment"],
    ["/v1/x:", "empty verb"],
    ["/v1/x:a/b", "not allowed"],
    ["/v1/a*b", "not allowed"],
    ["/v1/a b", "not allowed"],
    ["/v1/a%zz", "malformed percent-encoding"],
    ["/v1/a?b", "not allowed"],
    ["/v1/{a}x", "unexpected 'x'"],
  ])("refuses %j", (source, message) => {
    expect(() => parseTemplate(source)).toThrow(TemplateError);
    expect(() => parseTemplate(source)).toThrow(message);
  });
});

describe("matchTemplate", () => {
  it.each([
    ["/v1/tenants", "/v1/tenants", {}],
    ["/v1/tenants", "/v1/tenants/", undefined],
    ["/v1/tenants", "/v1/tenant", undefined],
    ["/v1/tenants/{id}", "/v1/tenants/ten_1", { id: "ten_1" }],
    ["/v1/tenants/{id}", "/v1/tenants/ten_1/", undefined],
    ["/v1/tenants/{id}", "/v1/tenants", undefined],
    ["/v1/tenants/{id}", "/v1/tenants/a/b", undefined],
    ["/v1/tenants/{id}", "/v1/tenants/a%2Fb", { id: "a/b" }],
    ["/v1/tenants/{id}", "/v1/tenants/caf%C3%A9", { id: "café" }],
    ["/v1/tenants/{id}", "/v1/tenants/a:b", { id: "a:b" }],
    ["/v1/{name=shelves/*/books/*}", "/v1/shelves/s/books/b", { name: "shelves/s/books/b" }],
    ["/v1/{name=shelves/*/books/*}", "/v1/shelves/s%2Fx/books/b%20c", { name: "shelves/s%2Fx/books/b c" }],
    ["/v1/{name=shelves/*/books/*}", "/v1/shelves/s/notbooks/b", undefined],
    ["/v1/{name=shelves/*/books/*}", "/v1/shelves/s/books", undefined],
    ["/v1/files/{path=**}", "/v1/files", { path: "" }],
    ["/v1/files/{path=**}", "/v1/files/a", { path: "a" }],
    ["/v1/files/{path=**}", "/v1/files/a/b/c%2Fd", { path: "a/b/c%2Fd" }],
    ["/v1/files/{path=**}", "/v1/files/a/", undefined],
    ["/v1/*/x/{id}", "/v1/anything/x/7", { id: "7" }],
    ["/v1/keys:verify", "/v1/keys:verify", {}],
    ["/v1/keys:verify", "/v1/keys", undefined],
    ["/v1/keys:verify", "/v1/keys:other", undefined],
    ["/v1/keys:verify", "/v1/:verify", undefined],
    ["/v1/k/{id}:rotate", "/v1/k/key_1:rotate", { id: "key_1" }],
    ["/v1/k/{id}:rotate", "/v1/k/a:b:rotate", { id: "a:b" }],
    ["/v1/a%20b", "/v1/a%20b", {}],
    ["/v1/a%20b", "/v1/a b", {}],
    ["/v1/{a.b}", "/v1/x", { "a.b": "x" }],
  ])("%s against %s", (source, path, vars) => {
    const m = matchTemplate(parseTemplate(source), path);
    expect(m === undefined ? undefined : Object.fromEntries(m)).toEqual(vars);
  });

  it("refuses a malformed escape in a captured value", () => {
    expect(() => matchTemplate(parseTemplate("/v1/{id}"), "/v1/a%zz")).toThrow(EscapeError);
    expect(() => matchTemplate(parseTemplate("/v1/{id}"), "/v1/a%C3")).toThrow(EscapeError);
    expect(() => matchTemplate(parseTemplate("/v1/{p=**}"), "/v1/a/%2")).toThrow(EscapeError);
  });
});

describe("decodePathValue", () => {
  it.each([
    ["plain", false, "plain"],
    ["a%2Fb", false, "a/b"],
    ["a%2Fb", true, "a%2Fb"],
    ["a%2fb/c%20d", true, "a%2fb/c d"],
    ["%E2%82%AC", false, "€"],
    ["a+b", false, "a+b"],
  ])("%s (keep %%2F: %s) → %s", (raw, keep, out) => {
    expect(decodePathValue(raw, keep)).toBe(out);
  });
});

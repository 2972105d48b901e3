// The route table: built from descriptors, precedence of literal over `*` over `**`, verbs,
// 404 versus 405, and duplicate detection at start-up.
import { describe, expect, it } from "vitest";
import { TranscodeService } from "../../gen/tenantd/testing/v1/transcode_pb.js";
import { TENANTD_SERVICES } from "../../src/app.js";
import { buildRouter, type RestBinding, RestRouter } from "../../src/transport/rest/router.js";
import { EscapeError, parseTemplate, TemplateError } from "../../src/transport/rest/template.js";

const method = TranscodeService.method.echo;
const bind = (httpMethod: string, source: string): RestBinding => ({
  method,
  httpMethod,
  template: parseTemplate(source),
  pathFields: new Map(),
  body: "",
  responseBody: undefined,
});

function table(...routes: [string, string][]): RestRouter {
  const r = new RestRouter();
  for (const [m, s] of routes) r.add(bind(m, s));
  return r;
}

const which = (r: RestRouter, m: string, path: string) => {
  const hit = r.lookup(m, path);
  if (hit === undefined) return 404;
  if ("allow" in hit) return `405 ${hit.allow.join(",")}`;
  return `${hit.binding.template.source} ${JSON.stringify(Object.fromEntries(hit.vars))}`;
};

describe("RestRouter", () => {
  const r = table(
    ["GET", "/v1/tenants"],
    ["POST", "/v1/tenants"],
    ["GET", "/v1/tenants/{id}"],
    ["PATCH", "/v1/tenants/{id}"],
    ["GET", "/v1/tenants/mine"],
    ["POST", "/v1/tenants/{id}:rotate"],
    ["GET", "/v1/{name=files/**}"],
    ["GET", "/v1/files/special"],
    ["GET", "/v1/*/echo"],
    ["POST", "/v1/keys:verify"],
    ["CUSTOM", "/v1/custom"],
  );

  it.each([
    ["GET", "/v1/tenants", "/v1/tenants {}"],
    ["POST", "/v1/tenants", "/v1/tenants {}"],
    ["GET", "/v1/tenants/ten_1", '/v1/tenants/{id} {"id":"ten_1"}'],
    ["GET", "/v1/tenants/mine", "/v1/tenants/mine {}"],
    ["PATCH", "/v1/tenants/mine", '/v1/tenants/{id} {"id":"mine"}'],
    ["POST", "/v1/tenants/ten_1:rotate", '/v1/tenants/{id}:rotate {"id":"ten_1"}'],
    ["GET", "/v1/tenants/ten_1:rotate", '/v1/tenants/{id} {"id":"ten_1:rotate"}'],
    ["GET", "/v1/files/a/b", '/v1/{name=files/**} {"name":"files/a/b"}'],
    ["GET", "/v1/files/special", "/v1/files/special {}"],
    ["GET", "/v1/files/special/x", '/v1/{name=files/**} {"name":"files/special/x"}'],
    ["GET", "/v1/files", '/v1/{name=files/**} {"name":"files"}'],
    ["GET", "/v1/anything/echo", "/v1/*/echo {}"],
    // Precedence is per segment, left to right: the literal `tenants` beats `*`.
    ["GET", "/v1/tenants/echo", '/v1/tenants/{id} {"id":"echo"}'],
    ["POST", "/v1/keys:verify", "/v1/keys:verify {}"],
    ["CUSTOM", "/v1/custom", "/v1/custom {}"],
    ["GET", "/v1/tenants/", 404],
    ["GET", "/v1/tenants//x", 404],
    ["GET", "/", 404],
    ["GET", "/v2/tenants", 404],
    ["GET", "/v1/keys:other", 404],
    ["DELETE", "/v1/tenants", "405 GET,POST"],
    ["DELETE", "/v1/tenants/ten_1", "405 GET,PATCH"],
    ["GET", "/v1/keys:verify", "405 POST"],
  ])("%s %s", (m, path, expected) => {
    expect(which(r, m, path)).toBe(expected);
  });

  it("refuses a malformed escape in a bound value", () => {
    expect(() => r.lookup("GET", "/v1/tenants/%E0%A4%A")).toThrow(EscapeError);
  });

  it("refuses duplicate routes: same method and equivalent template", () => {
    expect(() => table(["GET", "/v1/{a}"], ["GET", "/v1/{b=*}"])).toThrow(TemplateError);
    expect(() => table(["GET", "/v1/x/{a=**}"], ["GET", "/v1/{b=x/**}"])).toThrow(/bound twice/);
    expect(() => table(["GET", "/v1/k:verify"], ["GET", "/v1/k:verify"])).toThrow(/bound twice/);
    // Same template, other method; other verb: not duplicates.
    expect(() => table(["GET", "/v1/{a}"], ["POST", "/v1/{a}"], ["GET", "/v1/{a}:x"])).not.toThrow();
  });
});

describe("buildRouter", () => {
  it("builds every binding of tenantd's services, additional bindings included", () => {
    const r = buildRouter(TENANTD_SERVICES);
    const count = TENANTD_SERVICES.flatMap((s) => s.methods).length;
    expect(r.bindings.length).toBeGreaterThan(count);
    const hit = r.lookup("POST", "/v1/tenant/keys/key_1:rotate");
    expect(hit && "binding" in hit && hit.binding.method.name).toBe("RotateKey");
    const limits = r.lookup("PUT", "/v1/tenant/limits/resources");
    expect(limits && "binding" in limits && typeof limits.binding.body === "object" && limits.binding.body.name).toBe(
      "limits",
    );
  });

  it("resolves the test service's body, response_body and nested path fields", () => {
    const r = buildRouter([TranscodeService]);
    const archive = r.lookup("POST", "/v1/shelves/s/books/b:archive");
    expect(archive && "binding" in archive && archive.binding.responseBody?.name).toBe("book");
    const update = r.lookup("PATCH", "/v1/shelves/s/books/b");
    expect(update && "binding" in update && [...update.binding.pathFields.keys()]).toEqual(["book.name"]);
  });

  it("refuses the same service twice (every route a duplicate)", () => {
    expect(() => buildRouter([TranscodeService, TranscodeService])).toThrow(/bound twice/);
  });
});

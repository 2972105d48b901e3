// GET /openapi.json from a whole tenantd: the document validates as OpenAPI 3.1 (with
// @seriousme/openapi-schema-validator, independent of our generator), and covers every route of
// every google.api.http rule. The expected routes, parameters and JSON shapes are computed here
// from the descriptors directly, not through src/transport/rest/, so that a generator bug cannot
// hide behind shared code. The generator is also run on the transcoder's grammar fixture
// (proto-test), which uses the template features tenantd's own protos do not.
import {
  type DescField,
  type DescMessage,
  type DescMethod,
  getOption,
  hasOption,
  ScalarType,
} from "@bufbuild/protobuf";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http } from "../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../gen/google/api/http_pb.js";
import { TranscodeService } from "../../gen/tenantd/testing/v1/transcode_pb.js";
import { Access_Audience, access } from "../../gen/tenantd/v1/options_pb.js";
import { TENANTD_SERVICES } from "../../src/app.js";
import { buildOpenApi } from "../../src/transport/rest/openapi.js";
import { type Harness, startHarness } from "../helpers/app.js";

// biome-ignore lint/suspicious/noExplicitAny: the document is walked as untyped JSON
type Any = any;

let h: Harness;
let doc: Any;
let res: Response;
beforeAll(async () => {
  h = await startHarness();
  res = await fetch(`${h.baseUrl}/openapi.json`);
  doc = await res.json();
});
afterAll(() => h?.close());

interface Route {
  method: DescMethod;
  httpMethod: string;
  path: string;
  vars: string[];
  body: string;
  responseBody: string;
}

/** Every (HTTP method, OpenAPI path) of the services' rules, primary binding first. */
function expectedRoutes(services: readonly { methods: readonly DescMethod[] }[]): Route[] {
  const out: Route[] = [];
  for (const s of services) {
    for (const m of s.methods) {
      if (!hasOption(m, http)) continue;
      const rule = getOption(m, http);
      for (const r of [rule, ...rule.additionalBindings] as HttpRule[]) {
        const [httpMethod, template] =
          r.pattern.case === "custom"
            ? [r.pattern.value.kind.toLowerCase(), r.pattern.value.path]
            : [r.pattern.case as string, r.pattern.value as string];
        const vars = [...template.matchAll(/\{([^}=]+)(=[^}]*)?\}/g)].map((x) => x[1] as string);
        out.push({
          method: m,
          httpMethod,
          path: template.replace(/\{([^}=]+)(=[^}]*)?\}/g, "{$1}"),
          vars,
          body: r.body,
          responseBody: r.responseBody,
        });
      }
    }
  }
  return out;
}

const operations = (d: Any): [string, string, Any][] =>
  Object.entries(d.paths as Record<string, Record<string, Any>>).flatMap(([path, item]) =>
    Object.entries(item).map(([m, op]): [string, string, Any] => [path, m, op]),
  );

/** Resolves a local `#/components/...` reference, failing the test when it dangles. */
function deref(d: Any, node: Any): Any {
  if (node?.$ref === undefined) return node;
  const parts = (node.$ref as string).replace(/^#\//, "").split("/");
  let cur = d;
  for (const p of parts) cur = cur?.[p];
  expect(cur, `dangling $ref ${node.$ref}`).toBeDefined();
  return cur;
}

function allRefs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const x of node) allRefs(x, out);
  else if (node && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string") out.push(v);
      else allRefs(v, out);
    }
  }
  return out;
}

/** The proto3 JSON shape a field must have, checked against its schema. */
function expectFieldShape(d: Any, f: DescField, schema: Any): void {
  const where = `${f.parent.typeName}.${f.name}`;
  const single = (kind: string, scalar: ScalarType | undefined, msg: DescMessage | undefined, s: Any) => {
    if (kind === "scalar") {
      const t = scalar as ScalarType;
      const is64 = [
        ScalarType.INT64,
        ScalarType.UINT64,
        ScalarType.SINT64,
        ScalarType.FIXED64,
        ScalarType.SFIXED64,
      ].includes(t);
      const expected =
        is64 || t === ScalarType.STRING || t === ScalarType.BYTES
          ? "string"
          : t === ScalarType.BOOL
            ? "boolean"
            : t === ScalarType.DOUBLE || t === ScalarType.FLOAT
              ? "number"
              : "integer";
      expect(s.type, where).toBe(expected);
    } else if (kind === "enum") {
      const e = deref(d, s);
      expect(e.type, where).toBe("string");
      expect(e.enum.length, where).toBeGreaterThan(0);
    } else if (msg?.typeName === "google.protobuf.Timestamp") {
      expect(s, where).toMatchObject({ type: "string", format: "date-time" });
    } else if (msg?.typeName === "google.protobuf.Duration" || msg?.typeName === "google.protobuf.FieldMask") {
      expect(s.type, where).toBe("string");
    } else if (msg?.typeName.startsWith("google.protobuf.")) {
      expect(s.$ref, where).toBeUndefined();
    } else {
      expect(s.$ref, where).toBe(`#/components/schemas/${msg?.typeName}`);
    }
  };
  if (f.fieldKind === "list") {
    expect(schema.type, where).toBe("array");
    single(
      f.listKind,
      f.listKind === "scalar" ? f.scalar : undefined,
      f.listKind === "message" ? f.message : undefined,
      schema.items,
    );
  } else if (f.fieldKind === "map") {
    expect(schema.type, where).toBe("object");
    single(
      f.mapKind,
      f.mapKind === "scalar" ? f.scalar : undefined,
      f.mapKind === "message" ? f.message : undefined,
      schema.additionalProperties,
    );
  } else {
    single(
      f.fieldKind,
      f.fieldKind === "scalar" ? f.scalar : undefined,
      f.fieldKind === "message" ? f.message : undefined,
      schema,
    );
  }
}

describe("GET /openapi.json", () => {
  it("is served as JSON, revalidated by ETag", async () => {
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const etag = res.headers.get("etag");
    expect(etag).toBeTruthy();
    const again = await fetch(`${h.baseUrl}/openapi.json`, { headers: { "if-none-match": etag as string } });
    expect(again.status).toBe(304);
    // Public: no key needed to read the contract.
    expect((await fetch(`${h.baseUrl}/openapi.json`, { method: "POST" })).status).toBe(405);
  });

  it("validates as OpenAPI 3.1", async () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    const v = new Validator();
    const result = await v.validate(structuredClone(doc));
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    for (const ref of allRefs(doc)) deref(doc, { $ref: ref });
  });

  it("has an operation for every route of every http rule, and no other", () => {
    const expected = expectedRoutes(TENANTD_SERVICES);
    expect(expected.length).toBeGreaterThan(40);
    for (const r of expected) {
      const op = doc.paths[r.path]?.[r.httpMethod];
      expect(op, `${r.httpMethod.toUpperCase()} ${r.path}`).toBeDefined();
      expect(op.operationId).toMatch(new RegExp(`^${r.method.parent.name}_${r.method.name}(_\\d+)?$`));
      expect(op.tags).toEqual([r.method.parent.name]);
    }
    const got = operations(doc).map(([p, m]) => `${m} ${p}`);
    expect(got.sort()).toEqual(expected.map((r) => `${r.httpMethod} ${r.path}`).sort());
    const ids = operations(doc).map(([, , op]) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(doc.tags.map((t: Any) => t.name)).toEqual(TENANTD_SERVICES.map((s) => s.name));
    for (const t of doc.tags) expect(t.description).toBeTruthy();
  });

  it("describes every operation from the proto comments", () => {
    for (const [path, m, op] of operations(doc)) {
      expect(op.summary, `${m} ${path}`).toBeTruthy();
      expect(op.description, `${m} ${path}`).toBeTruthy();
      expect(op.description.replace(/\s+/g, " ").startsWith(op.summary)).toBe(true);
    }
    expect(doc.paths["/v1/tenants"].post.summary).toMatch(/tenant/i);
    expect(doc.components.schemas["tenantd.v1.Tenant"].description).toMatch(/customer/);
  });

  it("declares path, query and header parameters and the request bodies", () => {
    for (const r of expectedRoutes(TENANTD_SERVICES)) {
      const op = doc.paths[r.path][r.httpMethod];
      const params = (op.parameters ?? []) as Any[];
      for (const v of r.vars) {
        expect(
          params.find((p) => p.in === "path" && p.name === v),
          `${r.path} {${v}}`,
        ).toMatchObject({
          required: true,
        });
      }
      const query = params.filter((p) => p.in === "query").map((p) => p.name as string);
      if (r.body === "*") {
        expect(query).toEqual([]);
        const body = deref(doc, op.requestBody.content["application/json"].schema);
        const props = Object.keys(body.properties);
        const expectedProps = r.method.input.fields.filter((f) => !r.vars.includes(f.name)).map((f) => f.jsonName);
        expect(props.sort()).toEqual(expectedProps.sort());
      } else {
        // Every top-level field that is not path- or body-bound and can be a query value.
        for (const f of r.method.input.fields) {
          if (r.vars.includes(f.name) || f.name === r.body) continue;
          const queryable =
            f.fieldKind === "scalar" || f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind !== "message");
          if (queryable) expect(query, `${r.httpMethod} ${r.path} ?${f.name}`).toContain(f.name);
          if (f.fieldKind === "message" && !f.message.typeName.startsWith("google.protobuf.")) {
            expect(query.some((q) => q.startsWith(`${f.name}.`))).toBe(true);
          }
        }
        if (r.body === "") expect(op.requestBody).toBeUndefined();
        else {
          const field = r.method.input.fields.find((f) => f.name === r.body) as DescField;
          expectFieldShape(doc, field, op.requestBody.content["application/json"].schema);
        }
      }
      const audience = getOption(r.method, access).audience;
      const tenantHeader = params.find((p) => p.in === "header" && p.name === "x-tenant-id");
      if (audience === Access_Audience.TENANT || audience === Access_Audience.OWNER_OR_TENANT) {
        expect(tenantHeader, `${r.path} x-tenant-id`).toMatchObject({ required: false });
      } else {
        expect(tenantHeader, `${r.path} has no x-tenant-id`).toBeUndefined();
      }
    }
    // The REST body of UpdateResourceLimits is the JSON array of limits (body: "limits").
    const put = doc.paths["/v1/tenant/limits/resources"].put;
    expect(put.requestBody.content["application/json"].schema).toMatchObject({
      type: "array",
      items: { $ref: "#/components/schemas/tenantd.v1.ResourceLimit" },
    });
    expect(put.parameters.map((p: Any) => p.name)).toContain("etag");
  });

  it("has proto3 JSON schemas for every message field reachable from a route", () => {
    const seen = new Set<string>();
    const visit = (m: DescMessage) => {
      if (seen.has(m.typeName) || m.typeName.startsWith("google.protobuf.")) return;
      seen.add(m.typeName);
      const schema = doc.components.schemas[m.typeName];
      expect(schema, m.typeName).toBeDefined();
      for (const f of m.fields) {
        const s = schema.properties[f.jsonName];
        expect(s, `${m.typeName}.${f.jsonName}`).toBeDefined();
        expectFieldShape(doc, f, s);
        const next =
          f.fieldKind === "message"
            ? f.message
            : f.fieldKind === "list" && f.listKind === "message"
              ? f.message
              : f.fieldKind === "map" && f.mapKind === "message"
                ? f.message
                : undefined;
        if (next) visit(next);
      }
    };
    const fieldMessage = (f: DescField) =>
      f.fieldKind === "message"
        ? f.message
        : (f.fieldKind === "list" && f.listKind === "message") || (f.fieldKind === "map" && f.mapKind === "message")
          ? f.message
          : undefined;
    for (const r of expectedRoutes(TENANTD_SERVICES)) {
      // A request message is a component only when it is a whole body; its fields' types always are
      // reachable (through the body or, for query parameters, by name).
      for (const f of r.method.input.fields) {
        const next = fieldMessage(f);
        if (next && r.body !== "") visit(next);
      }
      visit(r.method.output);
      const op = doc.paths[r.path][r.httpMethod];
      expect(op.responses["200"].content["application/json"].schema).toEqual({
        $ref: `#/components/schemas/${r.method.output.typeName}`,
      });
    }
    expect(seen.size).toBeGreaterThan(50);
    const status = doc.components.schemas["tenantd.v1.Tenant.Status"];
    expect(status.enum).toEqual(expect.arrayContaining(["ACTIVE", "SUSPENDED"]));
  });

  it("declares the bearer scheme and the google.rpc.Status error responses", () => {
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
    expect(doc.security).toEqual([{ bearer: [] }]);
    for (const [path, m, op] of operations(doc)) {
      for (const code of ["400", "401", "403", "404", "409", "422", "429", "500"]) {
        const r = deref(doc, op.responses[code]);
        expect(r, `${m} ${path} ${code}`).toBeDefined();
        const schema = deref(doc, r.content["application/json"].schema);
        expect(Object.keys(schema.properties).sort()).toEqual(["code", "details", "message"]);
        expect(schema.properties.details).toMatchObject({ type: "array", items: { required: ["@type"] } });
      }
    }
    expect(deref(doc, doc.paths["/v1/tenants"].post.responses["429"]).headers["Retry-After"]).toBeDefined();
  });
});

describe("buildOpenApi on the grammar fixture", () => {
  const fixture: Any = buildOpenApi({ services: [TranscodeService], info: { title: "fixture", version: "1" } });

  it("validates and covers every binding", async () => {
    const result = await new Validator().validate(structuredClone(fixture));
    expect(result.errors ?? []).toEqual([]);
    const expected = expectedRoutes([TranscodeService]);
    // An unnamed `*` becomes a parameter of its own, so only the named variables are compared.
    const normal = (p: string) => p.replace(/\{_seg\d+\}/g, "*");
    expect(
      operations(fixture)
        .map(([p, m]) => `${m} ${normal(p)}`)
        .sort(),
    ).toEqual(expected.map((r) => `${r.httpMethod} ${r.path}`).sort());
    for (const ref of allRefs(fixture)) deref(fixture, { $ref: ref });
  });

  it("honours response_body, multi-segment variables and body fields", () => {
    const archive = fixture.paths["/v1/{name}:archive"].post;
    expect(archive.responses["200"].content["application/json"].schema.$ref).toBe(
      "#/components/schemas/tenantd.testing.v1.Book",
    );
    expect(archive.parameters[0]).toMatchObject({ name: "name", in: "path", required: true });
    expect(archive.parameters[0].description).toContain("shelves/*/books/*");
    const tags = fixture.paths["/v1/echo/{id}/tags"].put;
    expect(tags.requestBody.content["application/json"].schema.type).toBe("array");
    const get = fixture.paths["/v1/echo/{id}"].get;
    const names = get.parameters.map((p: Any) => p.name);
    expect(names).toContain("id");
    expect(names.some((n: string) => n.includes("."))).toBe(true);
  });
});

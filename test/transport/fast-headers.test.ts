import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LiteHeaders, NodeRequestHeaders } from "../../src/transport/grpc-fast.js";

// The gRPC fast path's two Headers subclasses (src/transport/grpc-fast.ts) must behave exactly as
// a plain Headers given the same operations: NodeRequestHeaders reads Node's header object until
// something iterates or changes it, LiteHeaders keeps plain names and values in a Map until
// something unusual happens. A model test applies random operations (including set-cookie,
// odd case, values Headers trims or refuses, names it refuses) to both and compares every answer.

type Op =
  | { kind: "set" | "append"; name: string; value: string }
  | { kind: "delete" | "get" | "has"; name: string }
  | { kind: "forEach" | "getSetCookie" };

const names = fc.constantFrom(
  "content-type",
  "Content-Type",
  "grpc-status",
  "x-a",
  "X-A",
  "set-cookie",
  "ratelimit-limit",
  "bad name",
  ":path",
);
const values = fc.constantFrom("1", "a b", " padded ", "x\ty", "line\nbreak", "", "v=1; Path=/", "ü");
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constantFrom("set" as const, "append" as const), name: names, value: values }),
  fc.record({ kind: fc.constantFrom("delete" as const, "get" as const, "has" as const), name: names }),
  fc.record({ kind: fc.constantFrom("forEach" as const, "getSetCookie" as const) }),
);

/** Runs one operation; the answer, or the error's type. */
function apply(h: Headers, o: Op): unknown {
  try {
    switch (o.kind) {
      case "set":
        h.set(o.name, o.value);
        return "ok";
      case "append":
        h.append(o.name, o.value);
        return "ok";
      case "delete":
        h.delete(o.name);
        return "ok";
      case "get":
        return h.get(o.name);
      case "has":
        return h.has(o.name);
      case "getSetCookie":
        return h.getSetCookie();
      case "forEach": {
        const out: Array<[string, string]> = [];
        h.forEach((v, k) => {
          out.push([k, v]);
        });
        return out;
      }
    }
  } catch (e) {
    return `throws ${(e as Error).name}`;
  }
}

const entries = (h: Headers) => [...h.entries()];

describe("LiteHeaders", () => {
  it("model: answers every operation as Headers does", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const real = new Headers({ "content-type": "application/grpc+proto" });
        const lite = new LiteHeaders("content-type", "application/grpc+proto") as unknown as Headers;
        for (const o of ops) expect(apply(lite, o)).toEqual(apply(real, o));
        expect(entries(lite)).toEqual(entries(real));
        expect(lite).toBeInstanceOf(Headers);
      }),
      { numRuns: 500 },
    );
  });

  it("copies into a Node header object what Headers holds", () => {
    const lite = new LiteHeaders("grpc-status", "0");
    const h = lite as unknown as Headers;
    h.set("Grpc-Message", "hi%20there");
    h.append("ratelimit-limit", "3");
    h.append("ratelimit-limit", "4");
    const out: Record<string, string | string[] | number> = { "x-request-id": "r" };
    lite.copyTo(out);
    expect(out).toEqual({
      "x-request-id": "r",
      "grpc-status": "0",
      "grpc-message": "hi%20there",
      "ratelimit-limit": "3, 4",
    });
    h.append("set-cookie", "a=1");
    h.append("set-cookie", "b=2");
    const spilled: Record<string, string | string[] | number> = {};
    lite.copyTo(spilled);
    expect(spilled).toEqual({
      "grpc-status": "0",
      "grpc-message": "hi%20there",
      "ratelimit-limit": "3, 4",
      "set-cookie": ["a=1", "b=2"],
    });
  });
});

describe("NodeRequestHeaders", () => {
  const nodeHeaders = fc.dictionary(
    fc.constantFrom("content-type", "authorization", "x-a", "set-cookie", "te", ":path", ":method"),
    fc.oneof(values, fc.array(values, { minLength: 1, maxLength: 3 })),
  );

  it("model: answers every operation as the Headers connect-node would build", () => {
    fc.assert(
      fc.property(nodeHeaders, fc.array(op, { maxLength: 20 }), (src, ops) => {
        // What connect-node's nodeHeaderToWebHeader builds: every non-pseudo header, arrays appended.
        const real = new Headers();
        let buildError: string | undefined;
        try {
          for (const [k, v] of Object.entries(src)) {
            if (k.startsWith(":")) continue;
            for (const e of typeof v === "string" ? [v] : v) real.append(k, e);
          }
        } catch (e) {
          buildError = (e as Error).name;
        }
        // Node never hands over values Headers refuses (HTTP/2 forbids them); skip those inputs.
        fc.pre(buildError === undefined);
        const lazy = new NodeRequestHeaders({ ...src }) as unknown as Headers;
        for (const o of ops) expect(apply(lazy, o)).toEqual(apply(real, o));
        expect(entries(lazy)).toEqual(entries(real));
      }),
      { numRuns: 500 },
    );
  });
});

import { getTextEncoding } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { installShortAsciiTextEncoding } from "../../src/transport/text-encoding.js";

// The short-ASCII conversions (src/transport/text-encoding.ts) must give exactly what the
// platform's TextEncoder / TextDecoder give, for every string and every byte sequence.

installShortAsciiTextEncoding();
const fast = getTextEncoding();
const te = new TextEncoder();
const td = new TextDecoder();
const tdStrict = new TextDecoder("utf-8", { fatal: true });
const strictOrError = (b: Uint8Array) => {
  try {
    return tdStrict.decode(b);
  } catch {
    return "error";
  }
};
const fastStrictOrError = (b: Uint8Array) => {
  try {
    return fast.decodeUtf8(b, true);
  } catch {
    return "error";
  }
};

// Short and long strings of ASCII, any code unit (lone surrogates included), and full Unicode.
const strings = fc.oneof(
  fc.string({ unit: "binary-ascii", maxLength: 80 }),
  fc.string({ unit: "grapheme-ascii", maxLength: 70 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 70 }),
  fc.string({ unit: "binary", maxLength: 70 }),
);
const byteArrays = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  fc.uint8Array({ maxLength: 80, max: 0x7f }),
  strings.map((s) => te.encode(s)),
);

describe("short-ASCII text encoding", () => {
  it("encodes every string as TextEncoder does", () => {
    fc.assert(
      fc.property(strings, (s) => {
        expect(Array.from(fast.encodeUtf8(s))).toEqual(Array.from(te.encode(s)));
      }),
      { numRuns: 20_000 },
    );
  });

  it("decodes every byte sequence as TextDecoder does, lenient and strict", () => {
    fc.assert(
      fc.property(byteArrays, (b) => {
        expect(fast.decodeUtf8(b)).toBe(td.decode(b));
        expect(fastStrictOrError(b)).toBe(strictOrError(b));
      }),
      { numRuns: 20_000 },
    );
  });

  it("handles the edges: empty, 64 and 65 characters, 0x7f and 0x80, a subarray", () => {
    for (const s of ["", "a".repeat(64), "a".repeat(65), "\u007f", "\u0080", "key_\u00e9"]) {
      expect(Array.from(fast.encodeUtf8(s))).toEqual(Array.from(te.encode(s)));
    }
    const whole = te.encode("xxhello, tenantdyy");
    const sub = whole.subarray(2, 16);
    expect(fast.decodeUtf8(sub)).toBe("hello, tenantd");
  });

  it("installing twice keeps one layer", () => {
    installShortAsciiTextEncoding();
    expect(getTextEncoding()).toBe(fast);
  });
});

import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  generateKey,
  hashesEqual,
  hashKey,
  keyIdOf,
  kidOf,
  MAX_KEY_LENGTH,
  parseKey,
} from "../../src/domain/key-format.js";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

describe("key format", () => {
  it("100k generated keys: 0 duplicates, 100 % valid checksum", () => {
    const seen = new Set<string>();
    let valid = 0;
    for (let i = 0; i < 100_000; i++) {
      const k = generateKey(i % 2 === 0 ? "tenant" : "owner", i % 3 === 0 ? "test" : "live");
      seen.add(k.apiKey);
      if (parseKey(k.apiKey)) valid++;
    }
    expect(seen.size).toBe(100_000);
    expect(valid).toBe(100_000);
  });

  it("every one-character mutation of 1k keys is refused", () => {
    let mutations = 0;
    let accepted = 0;
    for (let i = 0; i < 1000; i++) {
      const { apiKey } = generateKey("tenant", "live");
      // One substitution per position, with a character that differs from the original.
      for (let p = 0; p < apiKey.length; p++) {
        const c = apiKey[p] as string;
        const replacement = BASE62[(BASE62.indexOf(c) + 1 + (i % 61)) % 62] as string;
        const mutated = apiKey.slice(0, p) + (replacement === c ? "_" : replacement) + apiKey.slice(p + 1);
        mutations++;
        if (parseKey(mutated)) accepted++;
      }
    }
    expect(mutations).toBe(1000 * 71);
    expect(accepted).toBe(0);
  });

  it("round-trips kind, environment and key id (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("owner" as const, "tenant" as const),
        fc.constantFrom("live" as const, "test" as const),
        (kind, env) => {
          const k = generateKey(kind, env);
          const parsed = parseKey(k.apiKey);
          expect(parsed).toEqual({ kind, env, kid: k.kid });
          expect(k.apiKey.startsWith(k.prefix)).toBe(true);
          expect(k.apiKey.length).toBeLessThanOrEqual(MAX_KEY_LENGTH);
          expect(k.hash).toBe(hashKey(k.apiKey));
          expect(k.hash).not.toContain(k.apiKey.slice(k.prefix.length));
          expect(kidOf(keyIdOf(k.kid))).toBe(k.kid);
        },
      ),
    );
  });

  it("refuses arbitrary strings (property)", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 100 }), (s) => {
        expect(parseKey(s)).toBeNull();
      }),
    );
  });

  it("rotation keeps the key id but changes the secret", () => {
    const a = generateKey("tenant", "test");
    const b = generateKey("tenant", "test", a.kid);
    expect(b.kid).toBe(a.kid);
    expect(b.apiKey).not.toBe(a.apiKey);
    expect(parseKey(b.apiKey)?.kid).toBe(a.kid);
  });

  it("carries at least 128 bits of secret", () => {
    // 32 base62 characters: log2(62^32) ≈ 190.5 bits.
    expect(32 * Math.log2(62)).toBeGreaterThan(128);
  });

  it("hashKey is the hex SHA-256 of the key", () => {
    for (let i = 0; i < 100; i++) {
      const k = generateKey("tenant", "live").apiKey;
      expect(hashKey(k)).toBe(createHash("sha256").update(k).digest("hex"));
    }
  });

  it("hashesEqual: equal digests only; a difference at any position or a different length is unequal", () => {
    const a = hashKey("tdk_a");
    expect(hashesEqual(a, a)).toBe(true);
    for (let i = 0; i < a.length; i++) {
      const flipped = a.slice(0, i) + (a[i] === "0" ? "1" : "0") + a.slice(i + 1);
      expect(hashesEqual(a, flipped)).toBe(false);
    }
    expect(hashesEqual(a, a.slice(1))).toBe(false);
    expect(hashesEqual(a, hashKey("tdk_b"))).toBe(false);
    expect(hashesEqual("", "")).toBe(true);
  });
});

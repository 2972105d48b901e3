import * as crypto from "node:crypto";
import { createHash, randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";

// Key format: tdk_<kind>_<env>_<key id>_<secret><checksum>
//   kind      owner | tenant
//   env       live | test
//   key id    16 base62 characters (public; the record's id is `key_<key id>`)
//   secret    32 base62 characters (about 190 bits from the system CSPRNG)
//   checksum  6 base62 characters: CRC-32 of everything before it
// The checksum lets a malformed or mistyped key be refused before any store or cache lookup; it
// is not a security measure (the secret is).

export type KeyKind = "owner" | "tenant";
export type KeyEnv = "live" | "test";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KID_LEN = 16;
const SECRET_LEN = 32;
const CHECKSUM_LEN = 6;
const KEY_RE = /^tdk_(owner|tenant)_(live|test)_([0-9A-Za-z]{16})_([0-9A-Za-z]{38})$/;
/** Length of the longest key (a tenant key); owner keys are one character shorter. */
export const MAX_KEY_LENGTH = "tdk_tenant_live_".length + KID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

function randomBase62(n: number): string {
  // Rejection sampling keeps every character uniform: bytes >= 248 (= 4 * 62) are dropped.
  let out = "";
  while (out.length < n) {
    const bytes = randomBytes(n * 2);
    for (const b of bytes) {
      if (b < 248) out += BASE62[b % 62];
      if (out.length === n) break;
    }
  }
  return out;
}

function checksum(body: string): string {
  let v = crc32(body);
  let out = "";
  for (let i = 0; i < CHECKSUM_LEN; i++) {
    out = BASE62[v % 62] + out;
    v = Math.floor(v / 62);
  }
  return out;
}

export interface GeneratedKey {
  /** The full key, shown to the user once. */
  apiKey: string;
  /** The public key id part. */
  kid: string;
  /** SHA-256 of the full key, hex; the only form stored. */
  hash: string;
  /** `tdk_<kind>_<env>_<kid>_`, safe to show. */
  prefix: string;
  lastFour: string;
}

export function keyPrefix(kind: KeyKind, env: KeyEnv, kid: string): string {
  return `tdk_${kind}_${env}_${kid}_`;
}

/** Builds a key for an existing key id (rotation keeps the id) or a fresh one. */
export function generateKey(kind: KeyKind, env: KeyEnv, kid: string = randomBase62(KID_LEN)): GeneratedKey {
  const prefix = keyPrefix(kind, env, kid);
  const body = prefix + randomBase62(SECRET_LEN);
  const apiKey = body + checksum(body);
  return { apiKey, kid, hash: hashKey(apiKey), prefix, lastFour: apiKey.slice(-4) };
}

export interface ParsedKey {
  kind: KeyKind;
  env: KeyEnv;
  kid: string;
}

/** Parses a key and checks its checksum; null when malformed. Does no I/O. */
export function parseKey(apiKey: string): ParsedKey | null {
  const parsed = parseKeyShape(apiKey);
  return parsed !== null && checksumMatches(apiKey) ? parsed : null;
}

/**
 * The parts of a string of the key format, without checking its checksum; null otherwise.
 * (The key verifier skips the checksum for a key id it holds in its cache: the secret's hash
 * decides there, and a wrong checksum can never match a stored hash.)
 */
export function parseKeyShape(apiKey: string): ParsedKey | null {
  if (apiKey.length > MAX_KEY_LENGTH) return null;
  const m = KEY_RE.exec(apiKey);
  if (!m) return null;
  return { kind: m[1] as KeyKind, env: m[2] as KeyEnv, kid: m[3] as string };
}

/** Whether a string of the key format ends with the checksum of the rest. */
export function checksumMatches(apiKey: string): boolean {
  return checksum(apiKey.slice(0, -CHECKSUM_LEN)) === apiKey.slice(-CHECKSUM_LEN);
}

export function hashKey(apiKey: string): string {
  return oneShotHash ? oneShotHash("sha256", apiKey, "hex") : createHash("sha256").update(apiKey).digest("hex");
}

/** `crypto.hash` (Node ≥ 20.12): a digest without a Hash object, about half the cost. */
const oneShotHash: ((algorithm: string, data: string, encoding: "hex") => string) | undefined =
  typeof crypto.hash === "function" ? crypto.hash : undefined;

/**
 * Constant-time comparison of two hex SHA-256 digests: every character is compared whatever the
 * first difference (no early exit, no branch on the data), without the two buffers a
 * `timingSafeEqual` would need.
 */
export function hashesEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export function keyIdOf(kid: string): string {
  return `key_${kid}`;
}

/** The key id part of a `key_…` id, or null when it is not of that shape. */
export function kidOf(keyId: string): string | null {
  return /^key_[0-9A-Za-z]{16}$/.test(keyId) ? keyId.slice(4) : null;
}

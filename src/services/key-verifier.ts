import type { Clock } from "../domain/clock.js";
import type { Reason } from "../domain/errors.js";
import { checksumMatches, hashesEqual, hashKey, type ParsedKey, parseKeyShape } from "../domain/key-format.js";
import type { Credential, KeyRecord, TenantStatus } from "../domain/types.js";
import type { KeyStore, LastUsedUpdate } from "../store/ports.js";
import type { Invalidation, InvalidationBus } from "./invalidation.js";

// Verifies bearer keys on the hot path. A verified credential (key record + tenant status) is
// cached in process for `ttlMs`; a hit costs one SHA-256 and a map lookup, with no store or Redis
// call, and is answered synchronously. Expiry and rotation grace are checked against the clock on every call, not at caching
// time, so their boundaries are exact. Revoke, rotate, suspend and delete invalidate entries
// through the InvalidationBus. Last-used times are collected in memory and written in batches.

export type Verification =
  | { ok: true; key: KeyRecord; tenantStatus: TenantStatus | null; rotatedSecret: boolean }
  | { ok: false; reason: Reason; key?: KeyRecord; tenantStatus?: TenantStatus | null };

interface CacheEntry {
  credential: Credential;
  expiresAt: number;
}

export interface KeyVerifierOptions {
  keys: Pick<KeyStore, "credential" | "touch">;
  bus: InvalidationBus;
  clock: Clock;
  ttlMs: number;
  flushMs: number;
  /** Upper bound on cached keys; the oldest entries go first. */
  maxEntries?: number;
  onFlushError?: (err: unknown) => void;
}

export class KeyVerifier {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly byTenant = new Map<string, Set<string>>();
  private pendingTouches = new Map<string, LastUsedUpdate>();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly maxEntries: number;
  /** Bumped by every invalidation, so that a lookup that raced one is not cached. */
  private generation = 0;
  /** Lookups running now, by key id, with the generation they started in. */
  private readonly loading = new Map<string, { generation: number; lookup: Promise<Credential | null> }>();

  constructor(private readonly opts: KeyVerifierOptions) {
    this.maxEntries = opts.maxEntries ?? 100_000;
    opts.bus.subscribe((e) => this.invalidate(e));
    if (opts.flushMs > 0) {
      this.timer = setInterval(() => {
        this.flush().catch((err) => opts.onFlushError?.(err));
      }, opts.flushMs);
      this.timer.unref();
    }
  }

  /**
   * Verifies a full key: synchronously on a cache hit, else once the store has answered. Keys
   * that are not of the key format, or whose checksum is wrong, are refused without any store
   * lookup (the checksum is not checked for a cached key id: the hash comparison refuses it).
   */
  verify(apiKey: string): Verification | Promise<Verification> {
    const parsed = parseKeyShape(apiKey);
    if (!parsed) return { ok: false, reason: "KEY_INVALID" };
    const hit = this.cache.get(parsed.kid);
    if (hit !== undefined && hit.expiresAt > this.opts.clock.now()) return this.decide(apiKey, parsed, hit.credential);
    if (!checksumMatches(apiKey)) return { ok: false, reason: "KEY_INVALID" };
    const credential = this.credential(parsed.kid);
    return credential instanceof Promise
      ? credential.then((c) => this.decide(apiKey, parsed, c))
      : this.decide(apiKey, parsed, credential);
  }

  private decide(apiKey: string, parsed: ParsedKey, credential: Credential | null): Verification {
    if (!credential) return { ok: false, reason: "KEY_INVALID" };
    const { key, tenantStatus } = credential;
    if (key.kind !== parsed.kind || key.env !== parsed.env) return { ok: false, reason: "KEY_INVALID" };

    const hash = hashKey(apiKey);
    const now = this.opts.clock.now();
    let rotatedSecret = false;
    if (!hashesEqual(hash, key.hash)) {
      if (key.prevHash === null || !hashesEqual(hash, key.prevHash)) return { ok: false, reason: "KEY_INVALID" };
      if (key.prevValidUntil === null || now >= key.prevValidUntil) {
        return { ok: false, reason: "KEY_ROTATED", key, tenantStatus };
      }
      rotatedSecret = true;
    }
    if (key.revokedAt !== null) return { ok: false, reason: "KEY_REVOKED", key, tenantStatus };
    if (key.expiresAt !== null && now >= key.expiresAt) return { ok: false, reason: "KEY_EXPIRED", key, tenantStatus };
    if (key.kind === "tenant" && tenantStatus === null) return { ok: false, reason: "KEY_INVALID" };
    this.recordUse(key.kid, now, rotatedSecret);
    return { ok: true, key, tenantStatus, rotatedSecret };
  }

  private credential(kid: string): Credential | null | Promise<Credential | null> {
    const now = this.opts.clock.now();
    const hit = this.cache.get(kid);
    if (hit && hit.expiresAt > now) return hit.credential;
    // Concurrent misses of one key share one lookup (after an "all" invalidation, when Redis
    // comes back, every call would otherwise query the store at once) — but only a lookup started
    // in the current generation: a call that arrives after an invalidation (a revoke) must not
    // get an answer read before it.
    const generation = this.generation;
    const pending = this.loading.get(kid);
    if (pending !== undefined && pending.generation === generation) return pending.lookup;
    const lookup = this.opts.keys.credential(kid).then(
      (credential) => {
        if (this.loading.get(kid)?.lookup === lookup) this.loading.delete(kid);
        // An invalidation that arrived while the lookup ran may concern this very key: do not
        // cache a result that might predate it.
        if (credential && generation === this.generation && this.opts.ttlMs > 0) this.put(kid, credential, now);
        return credential;
      },
      (err: unknown) => {
        if (this.loading.get(kid)?.lookup === lookup) this.loading.delete(kid);
        throw err;
      },
    );
    this.loading.set(kid, { generation, lookup });
    return lookup;
  }

  private put(kid: string, credential: Credential, now: number): void {
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.drop(oldest);
    }
    this.cache.set(kid, { credential, expiresAt: now + this.opts.ttlMs });
    const tenantId = credential.key.tenantId;
    if (tenantId !== null) {
      let set = this.byTenant.get(tenantId);
      if (!set) {
        set = new Set();
        this.byTenant.set(tenantId, set);
      }
      set.add(kid);
    }
  }

  private drop(kid: string): void {
    const entry = this.cache.get(kid);
    if (!entry) return;
    this.cache.delete(kid);
    const tenantId = entry.credential.key.tenantId;
    if (tenantId !== null) this.byTenant.get(tenantId)?.delete(kid);
  }

  invalidate(event: Invalidation): void {
    this.generation++;
    switch (event.kind) {
      case "key":
        this.drop(event.kid);
        break;
      case "tenant": {
        for (const kid of this.byTenant.get(event.tenantId) ?? []) this.cache.delete(kid);
        this.byTenant.delete(event.tenantId);
        break;
      }
      case "all":
        this.cache.clear();
        this.byTenant.clear();
        break;
    }
  }

  private recordUse(kid: string, at: number, previous: boolean): void {
    const id = previous ? `${kid}:prev` : kid;
    const pending = this.pendingTouches.get(id);
    if (!pending || pending.at < at) this.pendingTouches.set(id, { kid, at, previous });
  }

  /** Writes collected last-used times in one batch. */
  async flush(): Promise<void> {
    if (this.pendingTouches.size === 0) return;
    const batch = [...this.pendingTouches.values()];
    this.pendingTouches = new Map();
    try {
      await this.opts.keys.touch(batch);
    } catch (err) {
      // Keep the newest times for the next flush rather than losing them.
      for (const u of batch) this.recordUse(u.kid, u.at, u.previous);
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }

  /** For tests and metrics. */
  get cachedKeys(): number {
    return this.cache.size;
  }
}

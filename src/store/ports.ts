// Ports: what services need from storage. Adapters (store/postgres, used for both Postgres and
// PGlite) implement them; services see only these interfaces and domain types.
import type { PagePosition } from "../domain/page-token.js";
import type {
  AuditEvent,
  Credential,
  KeyRecord,
  TenantEnvironment,
  TenantPatch,
  TenantRecord,
  TenantStatus,
  Tombstone,
} from "../domain/types.js";

export interface TenantListQuery {
  status?: TenantStatus;
  environment?: TenantEnvironment;
  plan?: string;
  /** Return items strictly after this position in (createdAt desc, id desc) order. */
  after?: PagePosition;
  limit: number;
}

export interface IdempotencyClaim {
  scope: string;
  requestId: string;
  /** SHA-256 of the canonical request body. */
  requestHash: string;
  /** How long a claim binds its request id; an older claim is forgotten and the id reusable. */
  ttlMs: number;
}

export type CreateTenantResult =
  | { kind: "created"; tenant: TenantRecord }
  /** The request id was seen before with the same body: the resource created then. */
  | { kind: "replayed"; tenant: TenantRecord }
  /** The request id was seen before with another body. */
  | { kind: "conflict" }
  /** The slug belongs to another tenant (the unique index decided). */
  | { kind: "slug_taken" };

export interface TenantStore {
  /**
   * Creates the tenant row, its schema and the schema's tables in one transaction: all or
   * nothing. With an idempotency claim, the claim is recorded in the same transaction, and
   * concurrent identical requests create exactly one tenant.
   */
  create(tenant: TenantRecord, idempotency?: IdempotencyClaim): Promise<CreateTenantResult>;
  get(id: string): Promise<TenantRecord | null>;
  list(q: TenantListQuery): Promise<TenantRecord[]>;
  /**
   * Applies a patch; bumps version and updatedAt. Returns null when the tenant does not exist and
   * "etag_mismatch" when `expectedVersion` is given and differs.
   */
  update(
    id: string,
    patch: TenantPatch,
    at: number,
    expectedVersion?: number,
  ): Promise<TenantRecord | null | "etag_mismatch">;
  /**
   * Deletes the tenant: revokes (deletes) its keys, drops its schema, removes the row and writes
   * a tombstone, in one transaction. Returns null when the tenant does not exist.
   */
  delete(id: string, deletedBy: string, at: number): Promise<Tombstone | null>;
  getTombstone(id: string): Promise<Tombstone | null>;
  /** Whether any tenant (or tombstone) uses the slug. */
  slugInUse(slug: string): Promise<boolean>;
  count(): Promise<number>;
}

export interface KeyListQuery {
  /** Null lists owner keys. */
  tenantId: string | null;
  includeRevoked: boolean;
  after?: PagePosition;
  limit: number;
}

export interface LastUsedUpdate {
  kid: string;
  at: number;
  /** True when the previous secret of a rotated key was used. */
  previous: boolean;
}

export interface KeyStore {
  insert(key: KeyRecord): Promise<void>;
  /** The hot-path lookup: key and its tenant's status, in one query. */
  credential(kid: string): Promise<Credential | null>;
  /** A key of the given tenant (null: owner keys); null when not found in that scope. */
  get(tenantId: string | null, kid: string): Promise<KeyRecord | null>;
  list(q: KeyListQuery): Promise<KeyRecord[]>;
  /** Sets revokedAt if not yet revoked; returns the key after, or null if not in scope. */
  revoke(tenantId: string | null, kid: string, at: number): Promise<KeyRecord | null>;
  /** Replaces the hash, keeping the old one as prevHash until prevValidUntil. */
  rotate(
    tenantId: string | null,
    kid: string,
    next: { hash: string; lastFour: string; at: number; prevValidUntil: number },
  ): Promise<KeyRecord | null>;
  /** Writes last-used times in one batch; later times win, earlier ones never overwrite. */
  touch(updates: LastUsedUpdate[]): Promise<void>;
  /** Active (not revoked, not expired at `now`) owner keys holding the permission. */
  countActiveOwnerKeys(permission: string, now: number): Promise<number>;
  /** Whether any owner key exists (revoked or not); the bootstrap runs only on an empty store. */
  anyOwnerKey(): Promise<boolean>;
}

export interface AuditStore {
  /** Appends to the tenant's own audit trail, inside the tenant's schema. */
  append(event: AuditEvent): Promise<void>;
  list(tenantId: string, q: { after?: PagePosition; limit: number }): Promise<AuditEvent[]>;
}

export interface SettingsStore {
  /**
   * Returns the stored value of a server setting, creating it with `make()` the first time
   * (atomically: concurrent first calls agree on one value).
   */
  getOrCreate(name: string, make: () => string): Promise<string>;
}

export interface Stores {
  tenants: TenantStore;
  keys: KeyStore;
  audit: AuditStore;
  settings: SettingsStore;
  /** Readiness probe: a trivial query bounded by the statement timeout. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

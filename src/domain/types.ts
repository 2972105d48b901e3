import type { KeyEnv, KeyKind } from "./key-format.js";

// Entities as the services and stores see them. Times are milliseconds since the epoch; absent
// optional times are null.

export type TenantStatus = "active" | "suspended";
export type TenantEnvironment = "sandbox" | "live";

export interface TenantRecord {
  id: string;
  name: string;
  email: string;
  slug: string;
  environment: TenantEnvironment;
  status: TenantStatus;
  plan: string;
  defaultCurrency: string;
  timezone: string;
  webhookUrl: string;
  webhookEnabled: boolean;
  metadata: Record<string, string>;
  createdAt: number;
  updatedAt: number;
  /** Incremented on every update; the etag is derived from it. */
  version: number;
}

/** Fields a tenant update may set. */
export type TenantPatch = Partial<
  Pick<
    TenantRecord,
    "name" | "email" | "plan" | "status" | "defaultCurrency" | "timezone" | "webhookUrl" | "webhookEnabled" | "metadata"
  >
>;

export interface KeyRecord {
  /** The public key id part (the record id is `key_<kid>`). */
  kid: string;
  /** Null for owner keys. */
  tenantId: string | null;
  kind: KeyKind;
  env: KeyEnv;
  label: string;
  permissions: string[];
  /** SHA-256 (hex) of the current full key. */
  hash: string;
  lastFour: string;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
  rotatedAt: number | null;
  /** Hash of the secret replaced by the last rotation, valid until `prevValidUntil`. */
  prevHash: string | null;
  prevValidUntil: number | null;
  prevLastUsedAt: number | null;
}

/** A key with its tenant's status, as the verification path needs it in one lookup. */
export interface Credential {
  key: KeyRecord;
  /** Null for owner keys, and for keys whose tenant no longer exists. */
  tenantStatus: TenantStatus | null;
}

export interface Tombstone {
  tenantId: string;
  slug: string;
  deletedAt: number;
  /** The key id of the caller that deleted the tenant. */
  deletedBy: string;
}

export interface AuditEvent {
  id: string;
  tenantId: string;
  /** The key that made the call (`key_…`). */
  actorKeyId: string;
  actorKind: KeyKind;
  /**
   * True when an owner key acted on the tenant: on its behalf with `x-tenant-id`, or through an
   * owner RPC that names it (UpdateTenant, CreateKey with tenant_id …). False for the tenant's own
   * keys.
   */
  actingAs: boolean;
  /** Full RPC name, e.g. `tenantd.v1.KeyService/RevokeKey`. */
  method: string;
  /** What changed, e.g. `key_…` or `tenant`. */
  resource: string;
  requestId: string;
  createdAt: number;
  details: Record<string, string>;
}

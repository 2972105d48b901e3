import type { KeyEnv, KeyKind } from "../../domain/key-format.js";
import type {
  AuditEvent,
  KeyRecord,
  TenantEnvironment,
  TenantPatch,
  TenantRecord,
  TenantStatus,
  Tombstone,
} from "../../domain/types.js";

// Pure conversions between database rows and domain records. Rows carry timestamptz as Date
// (both pg and PGlite parse it so) and jsonb as parsed values; the domain carries times as
// milliseconds since the epoch. Values written to jsonb columns are serialised here, because pg
// would send a JavaScript array as a Postgres array literal rather than JSON.

export interface TenantRow {
  id: string;
  name: string;
  email: string;
  slug: string;
  environment: string;
  status: string;
  plan: string;
  default_currency: string;
  timezone: string;
  webhook_url: string;
  webhook_enabled: boolean;
  metadata: Record<string, string> | null;
  created_at: Date;
  updated_at: Date;
  version: number;
}

export interface KeyRow {
  kid: string;
  tenant_id: string | null;
  kind: string;
  env: string;
  label: string;
  permissions: string[] | null;
  hash: string;
  last_four: string;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  rotated_at: Date | null;
  prev_hash: string | null;
  prev_valid_until: Date | null;
  prev_last_used_at: Date | null;
}

export interface TombstoneRow {
  tenant_id: string;
  slug: string;
  deleted_at: Date;
  deleted_by: string;
}

export interface AuditRow {
  id: string;
  actor_key_id: string;
  actor_kind: string;
  acting_as: boolean;
  method: string;
  resource: string;
  request_id: string;
  created_at: Date;
  details: Record<string, string> | null;
}

export function ms(d: Date): number {
  return d.getTime();
}

export function msOrNull(d: Date | null | undefined): number | null {
  return d == null ? null : d.getTime();
}

export function dateOrNull(t: number | null | undefined): Date | null {
  return t == null ? null : new Date(t);
}

export function tenantFromRow(r: TenantRow): TenantRecord {
  return {
    id: r.id,
    name: r.name,
    email: r.email,
    slug: r.slug,
    environment: r.environment as TenantEnvironment,
    status: r.status as TenantStatus,
    plan: r.plan,
    defaultCurrency: r.default_currency,
    timezone: r.timezone,
    webhookUrl: r.webhook_url,
    webhookEnabled: r.webhook_enabled,
    metadata: r.metadata ?? {},
    createdAt: ms(r.created_at),
    updatedAt: ms(r.updated_at),
    version: r.version,
  };
}

/** Column values of a tenant, ready for insert (jsonb serialised). */
export function tenantToRow(t: TenantRecord): Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    email: t.email,
    slug: t.slug,
    environment: t.environment,
    status: t.status,
    plan: t.plan,
    default_currency: t.defaultCurrency,
    timezone: t.timezone,
    webhook_url: t.webhookUrl,
    webhook_enabled: t.webhookEnabled,
    metadata: JSON.stringify(t.metadata),
    created_at: new Date(t.createdAt),
    updated_at: new Date(t.updatedAt),
    version: t.version,
  };
}

/** Column values a patch sets; fields absent from the patch are left out. */
export function tenantPatchToRow(p: TenantPatch): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (p.name !== undefined) out.name = p.name;
  if (p.email !== undefined) out.email = p.email;
  if (p.plan !== undefined) out.plan = p.plan;
  if (p.status !== undefined) out.status = p.status;
  if (p.defaultCurrency !== undefined) out.default_currency = p.defaultCurrency;
  if (p.timezone !== undefined) out.timezone = p.timezone;
  if (p.webhookUrl !== undefined) out.webhook_url = p.webhookUrl;
  if (p.webhookEnabled !== undefined) out.webhook_enabled = p.webhookEnabled;
  if (p.metadata !== undefined) out.metadata = JSON.stringify(p.metadata);
  return out;
}

export function keyFromRow(r: KeyRow): KeyRecord {
  return {
    kid: r.kid,
    tenantId: r.tenant_id,
    kind: r.kind as KeyKind,
    env: r.env as KeyEnv,
    label: r.label,
    permissions: r.permissions ?? [],
    hash: r.hash,
    lastFour: r.last_four,
    createdAt: ms(r.created_at),
    expiresAt: msOrNull(r.expires_at),
    revokedAt: msOrNull(r.revoked_at),
    lastUsedAt: msOrNull(r.last_used_at),
    rotatedAt: msOrNull(r.rotated_at),
    prevHash: r.prev_hash,
    prevValidUntil: msOrNull(r.prev_valid_until),
    prevLastUsedAt: msOrNull(r.prev_last_used_at),
  };
}

export function keyToRow(k: KeyRecord): Record<string, unknown> {
  return {
    kid: k.kid,
    tenant_id: k.tenantId,
    kind: k.kind,
    env: k.env,
    label: k.label,
    permissions: JSON.stringify(k.permissions),
    hash: k.hash,
    last_four: k.lastFour,
    created_at: new Date(k.createdAt),
    expires_at: dateOrNull(k.expiresAt),
    revoked_at: dateOrNull(k.revokedAt),
    last_used_at: dateOrNull(k.lastUsedAt),
    rotated_at: dateOrNull(k.rotatedAt),
    prev_hash: k.prevHash,
    prev_valid_until: dateOrNull(k.prevValidUntil),
    prev_last_used_at: dateOrNull(k.prevLastUsedAt),
  };
}

export function tombstoneFromRow(r: TombstoneRow): Tombstone {
  return { tenantId: r.tenant_id, slug: r.slug, deletedAt: ms(r.deleted_at), deletedBy: r.deleted_by };
}

export function auditFromRow(tenantId: string, r: AuditRow): AuditEvent {
  return {
    id: r.id,
    tenantId,
    actorKeyId: r.actor_key_id,
    actorKind: r.actor_kind as KeyKind,
    actingAs: r.acting_as,
    method: r.method,
    resource: r.resource,
    requestId: r.request_id,
    createdAt: ms(r.created_at),
    details: r.details ?? {},
  };
}

/** Columns of an audit row; the tenant is implied by the schema the row lives in. */
export function auditToRow(e: AuditEvent): Record<string, unknown> {
  return {
    id: e.id,
    actor_key_id: e.actorKeyId,
    actor_kind: e.actorKind,
    acting_as: e.actingAs,
    method: e.method,
    resource: e.resource,
    request_id: e.requestId,
    created_at: new Date(e.createdAt),
    details: JSON.stringify(e.details),
  };
}

/** Postgres' unique_violation, with the constraint that raised it. */
export function uniqueViolation(e: unknown): string | null {
  const err = e as { code?: unknown; constraint?: unknown } | null;
  if (err && err.code === "23505") return typeof err.constraint === "string" ? err.constraint : "";
  return null;
}

// Records for store tests. Every test makes its own tenants with fresh ids and slugs, so tests in
// one file share a database without seeing each other's data through the filters they use.
import { randomBytes } from "node:crypto";
import { newId } from "../../src/domain/ids.js";
import { generateKey } from "../../src/domain/key-format.js";
import type { AuditEvent, KeyRecord, TenantRecord } from "../../src/domain/types.js";

export const T0 = Date.UTC(2026, 0, 1);

export function uniqueSuffix(): string {
  return randomBytes(5).toString("hex");
}

export function makeTenant(over: Partial<TenantRecord> = {}): TenantRecord {
  const createdAt = over.createdAt ?? T0;
  const suffix = uniqueSuffix();
  return {
    id: newId("ten", createdAt),
    name: `Acme ${suffix}`,
    email: `ops-${suffix}@example.com`,
    slug: `acme-${suffix}`,
    environment: "sandbox",
    status: "active",
    plan: "free",
    defaultCurrency: "EUR",
    timezone: "Europe/Berlin",
    webhookUrl: "",
    webhookEnabled: false,
    metadata: { team: "core" },
    createdAt,
    updatedAt: createdAt,
    version: 1,
    ...over,
  };
}

export function makeKey(tenantId: string | null, over: Partial<KeyRecord> = {}): KeyRecord {
  const kind = tenantId === null ? "owner" : "tenant";
  const g = generateKey(kind, "test");
  return {
    kid: g.kid,
    tenantId,
    kind,
    env: "test",
    label: "ci",
    permissions: tenantId === null ? ["tenants:read", "tenants:write"] : ["keys:read"],
    hash: g.hash,
    lastFour: g.lastFour,
    createdAt: T0,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    rotatedAt: null,
    prevHash: null,
    prevValidUntil: null,
    prevLastUsedAt: null,
    ...over,
  };
}

export function makeEvent(tenantId: string, over: Partial<AuditEvent> = {}): AuditEvent {
  return {
    id: newId("evt", over.createdAt ?? T0),
    tenantId,
    actorKeyId: "key_0123456789abcdef",
    actorKind: "owner",
    actingAs: true,
    method: "tenantd.v1.KeyService/RevokeKey",
    resource: "key_abcdef0123456789",
    requestId: `req-${uniqueSuffix()}`,
    createdAt: T0,
    details: { reason: "test" },
    ...over,
  };
}

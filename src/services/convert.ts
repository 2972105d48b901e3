import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Key, Key_Environment, Key_Kind, Key_State, KeySchema } from "../../gen/tenantd/v1/key_pb.js";
import { type Tenant, Tenant_Environment, Tenant_Status, TenantSchema } from "../../gen/tenantd/v1/tenant_pb.js";
import { keyIdOf, keyPrefix } from "../domain/key-format.js";
import type { KeyRecord, TenantEnvironment, TenantRecord, TenantStatus } from "../domain/types.js";

// Pure converters between domain records and API messages, exhaustive over enums.

export function ts(ms: number | null): Timestamp | undefined {
  return ms === null ? undefined : timestampFromMs(ms);
}

export function msOf(t: Timestamp | undefined): number | null {
  return t === undefined ? null : timestampMs(t);
}

export function tenantStatusToProto(s: TenantStatus): Tenant_Status {
  switch (s) {
    case "active":
      return Tenant_Status.ACTIVE;
    case "suspended":
      return Tenant_Status.SUSPENDED;
  }
}

export function tenantStatusFromProto(s: Tenant_Status): TenantStatus | undefined {
  switch (s) {
    case Tenant_Status.ACTIVE:
      return "active";
    case Tenant_Status.SUSPENDED:
      return "suspended";
    case Tenant_Status.STATUS_UNSPECIFIED:
      return undefined;
  }
}

export function tenantEnvToProto(e: TenantEnvironment): Tenant_Environment {
  switch (e) {
    case "sandbox":
      return Tenant_Environment.SANDBOX;
    case "live":
      return Tenant_Environment.LIVE;
  }
}

export function tenantEnvFromProto(e: Tenant_Environment): TenantEnvironment | undefined {
  switch (e) {
    case Tenant_Environment.SANDBOX:
      return "sandbox";
    case Tenant_Environment.LIVE:
      return "live";
    case Tenant_Environment.ENVIRONMENT_UNSPECIFIED:
      return undefined;
  }
}

export function etagOf(t: TenantRecord): string {
  return `W/"${t.version}"`;
}

/** The version an etag names, or null when the etag is not one tenantd issued. */
export function versionOfEtag(etag: string): number | null {
  const m = /^W\/"(\d{1,15})"$/.exec(etag);
  return m ? Number(m[1]) : null;
}

export function tenantToProto(t: TenantRecord): Tenant {
  return create(TenantSchema, {
    id: t.id,
    name: t.name,
    email: t.email,
    slug: t.slug,
    environment: tenantEnvToProto(t.environment),
    status: tenantStatusToProto(t.status),
    plan: t.plan,
    defaultCurrency: t.defaultCurrency,
    timezone: t.timezone,
    webhookUrl: t.webhookUrl,
    webhookEnabled: t.webhookEnabled,
    metadata: { ...t.metadata },
    createTime: ts(t.createdAt),
    updateTime: ts(t.updatedAt),
    etag: etagOf(t),
  });
}

export function keyStateOf(k: KeyRecord, now: number): Key_State {
  if (k.revokedAt !== null) return Key_State.REVOKED;
  if (k.expiresAt !== null && now >= k.expiresAt) return Key_State.EXPIRED;
  return Key_State.ACTIVE;
}

export function keyToProto(k: KeyRecord, now: number): Key {
  return create(KeySchema, {
    id: keyIdOf(k.kid),
    tenantId: k.tenantId ?? "",
    label: k.label,
    kind: k.kind === "owner" ? Key_Kind.OWNER : Key_Kind.TENANT,
    environment: k.env === "live" ? Key_Environment.LIVE : Key_Environment.TEST,
    permissions: [...k.permissions],
    prefix: keyPrefix(k.kind, k.env, k.kid),
    lastFour: k.lastFour,
    state: keyStateOf(k, now),
    createTime: ts(k.createdAt),
    expireTime: ts(k.expiresAt),
    lastUsedTime: ts(k.lastUsedAt),
    revokeTime: ts(k.revokedAt),
    rotateTime: ts(k.rotatedAt),
    previousSecretExpireTime: ts(k.prevValidUntil),
    previousSecretLastUsedTime: ts(k.prevLastUsedAt),
  });
}

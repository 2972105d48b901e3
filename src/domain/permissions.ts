// Permissions (scopes) a key can hold. Tenant keys hold tenant scopes only; owner keys may hold
// both, since an owner key acting on behalf of a tenant is checked against the same tenant scopes.

export const TENANT_PERMISSIONS = [
  "tenant:read",
  "tenant:write",
  "tenant:delete",
  "keys:read",
  "keys:write",
  "config:read",
  "config:write",
  "secrets:read",
  "secrets:write",
  "rbac:read",
  "rbac:write",
  "limits:read",
  "limits:write",
  "limits:check",
  "usage:read",
  "usage:write",
  "audit:read",
] as const;

export const OWNER_ONLY_PERMISSIONS = [
  "tenants:read",
  "tenants:write",
  "tenants:delete",
  "keys:verify",
  "owner-keys:write",
] as const;

export const OWNER_PERMISSIONS = [...OWNER_ONLY_PERMISSIONS, ...TENANT_PERMISSIONS] as const;

export type Permission = (typeof OWNER_PERMISSIONS)[number];

const tenantSet = new Set<string>(TENANT_PERMISSIONS);
const ownerSet = new Set<string>(OWNER_PERMISSIONS);

export function isTenantPermission(p: string): boolean {
  return tenantSet.has(p);
}

export function isOwnerPermission(p: string): boolean {
  return ownerSet.has(p);
}

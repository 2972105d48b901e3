import { createHash } from "node:crypto";
import type { HandlerContext } from "@connectrpc/connect";
import { DomainError } from "../domain/errors.js";
import { type CallScope, scopeKey } from "./context.js";

/** The call scope set by the auth interceptor; its absence is a wiring fault, not a client error. */
export function scopeOf(ctx: HandlerContext): CallScope {
  const scope = ctx.values.get(scopeKey);
  if (!scope) throw new DomainError("internal", "INTERNAL_ERROR", "call scope missing");
  return scope;
}

/** Tenant-scoped RPCs: the tenant the call acts on (guaranteed by the TENANT audience). */
export function currentTenantId(scope: CallScope): string {
  if (scope.tenantId === null) {
    throw new DomainError("failed_precondition", "TENANT_CONTEXT_REQUIRED", "owner keys must send x-tenant-id");
  }
  return scope.tenantId;
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** SHA-256 of a JSON value with object keys sorted, so equal requests hash equally. */
export function canonicalHash(v: unknown): string {
  return createHash("sha256")
    .update(JSON.stringify(canonical(v)))
    .digest("hex");
}

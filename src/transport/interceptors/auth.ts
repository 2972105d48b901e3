import type { Interceptor } from "@connectrpc/connect";
import { DomainError, tenantNotFound } from "../../domain/errors.js";
import { isTenantId } from "../../domain/ids.js";
import { keyIdOf } from "../../domain/key-format.js";
import { type CallScope, scopeKey } from "../../services/context.js";
import type { KeyVerifier, Verification } from "../../services/key-verifier.js";
import type { TenantStore } from "../../store/ports.js";
import { Audience, accessOf } from "../access.js";
import { addLogFields } from "../logging.js";

// Authentication and scope, the same for every protocol:
//   1. `authorization: Bearer <key>` → principal (malformed keys refused before any lookup);
//   2. a tenant key's suspended tenant → PERMISSION_DENIED TENANT_SUSPENDED;
//   3. the RPC's audience: owner-only RPCs refuse tenant keys; `x-tenant-id` is honoured for
//      owner keys only and names the tenant acted on (which must exist);
//   4. the permission the RPC declares, checked against the key's permissions.
// The result is a CallScope in the call's context values; handlers never read headers.

export interface AuthDeps {
  verifier: Pick<KeyVerifier, "verify">;
  tenants: Pick<TenantStore, "get">;
  requestIdOf: (values: { get<T>(key: { id: symbol; defaultValue: T }): T }) => string;
}

function unauthenticated(
  reason: "KEY_MISSING" | "KEY_INVALID" | "KEY_REVOKED" | "KEY_EXPIRED" | "KEY_ROTATED",
  keyId?: string,
) {
  const messages = {
    KEY_MISSING: "missing API key: send `authorization: Bearer <key>`",
    KEY_INVALID: "invalid API key",
    KEY_REVOKED: "API key revoked",
    KEY_EXPIRED: "API key expired",
    KEY_ROTATED: "API key was rotated and its grace period has ended; use the new key",
  };
  return new DomainError("unauthenticated", reason, messages[reason], { metadata: keyId ? { key_id: keyId } : {} });
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

type Next = Parameters<Interceptor>[0];
type Req = Parameters<Next>[0];
type Access = NonNullable<ReturnType<typeof accessOf>>;

export function authInterceptor(deps: AuthDeps): Interceptor {
  // Not an async function: a call whose key is in the verification cache goes through without a
  // promise of its own or a turn of the microtask queue. Whatever throws becomes the rejection.
  return (next) => (req) => {
    try {
      const access = accessOf(req.method);
      if (!access || access.audience === Audience.PUBLIC) return next(req);

      const header = req.header.get("authorization");
      if (!header) throw unauthenticated("KEY_MISSING");
      const m = BEARER.exec(header);
      if (!m) throw unauthenticated("KEY_INVALID");
      const pending = deps.verifier.verify(m[1] as string);
      // A cache hit is answered synchronously.
      if (pending instanceof Promise) return pending.then((v) => admit(deps, access, req, next, v));
      return admit(deps, access, req, next, pending);
    } catch (e) {
      return Promise.reject(e);
    }
  };
}

/** The checks after verification (steps 2–4); throws what it refuses. */
function admit(deps: AuthDeps, access: Access, req: Req, next: Next, v: Verification): ReturnType<Next> {
  if (!v.ok) {
    if (
      v.reason === "KEY_MISSING" ||
      v.reason === "KEY_INVALID" ||
      v.reason === "KEY_REVOKED" ||
      v.reason === "KEY_EXPIRED" ||
      v.reason === "KEY_ROTATED"
    ) {
      throw unauthenticated(v.reason, v.key ? keyIdOf(v.key.kid) : undefined);
    }
    throw unauthenticated("KEY_INVALID");
  }
  const key = v.key;
  const actAs = req.header.get("x-tenant-id");

  if (key.kind === "tenant") {
    const tenantId = key.tenantId;
    if (v.tenantStatus === "suspended") {
      throw new DomainError("permission_denied", "TENANT_SUSPENDED", "tenant is suspended", {
        metadata: { tenant_id: tenantId ?? "" },
      });
    }
    if (actAs !== null && actAs !== tenantId) {
      throw new DomainError("permission_denied", "ACT_AS_FORBIDDEN", "only owner keys may send x-tenant-id", {
        metadata: { tenant_id: actAs.slice(0, 64) },
      });
    }
    if (access.audience === Audience.OWNER) {
      throw new DomainError("permission_denied", "OWNER_KEY_REQUIRED", "this RPC needs an owner key");
    }
    return enter(deps, access, req, next, v, tenantId, false);
  }
  if (actAs !== null && access.audience !== Audience.OWNER) {
    // The owner acts on behalf of a tenant. The tenant must exist; a suspended tenant can still
    // be managed by its owner.
    if (!isTenantId(actAs)) throw tenantNotFound(actAs.slice(0, 64));
    return deps.tenants.get(actAs).then((tenant) => {
      if (!tenant) throw tenantNotFound(actAs);
      return enter(deps, access, req, next, v, tenant.id, true);
    });
  }
  if (access.audience === Audience.TENANT) {
    throw new DomainError(
      "failed_precondition",
      "TENANT_CONTEXT_REQUIRED",
      "owner keys must name the tenant with the x-tenant-id header for this RPC",
    );
  }
  return enter(deps, access, req, next, v, null, false);
}

/** The permission check (step 4), then the call with its CallScope. */
function enter(
  deps: AuthDeps,
  access: Access,
  req: Req,
  next: Next,
  v: Verification & { ok: true },
  tenantId: string | null,
  actingAs: boolean,
): ReturnType<Next> {
  const key = v.key;
  const keyId = keyIdOf(key.kid);
  if (!key.permissions.includes(access.permission)) {
    throw new DomainError(
      "permission_denied",
      "PERMISSION_MISSING",
      `the key lacks the permission ${access.permission}`,
      {
        metadata: { permission: access.permission, key_id: keyId },
      },
    );
  }
  const scope: CallScope = {
    principal: { key, keyId, rotatedSecret: v.rotatedSecret },
    tenantId,
    actingAs,
    requestId: deps.requestIdOf(req.contextValues),
  };
  req.contextValues.set(scopeKey, scope);
  addLogFields(req.contextValues, tenantId ? { key_id: keyId, tenant_id: tenantId } : { key_id: keyId });
  return next(req);
}

/**
 * Authentication switched off after the first call, for the bench's "same RPC with auth disabled"
 * baseline only (AppOptions.benchTrustCallers; no configuration reaches it). The first call of a
 * method with a given `authorization` and `x-tenant-id` goes through authInterceptor; its scope
 * is then reused for every later call with the same header values, with no verification, rate
 * limit or usage count (createApp leaves those interceptors out). A revoked key keeps working.
 */
export function trustedCallerInterceptor(deps: AuthDeps): Interceptor {
  const auth = authInterceptor(deps);
  const scopes = new Map<string, CallScope>();
  const keyOf = (req: { method: { parent: { typeName: string }; name: string }; header: Headers }) =>
    `${req.method.parent.typeName}/${req.method.name}\n${req.header.get("authorization") ?? ""}\n${req.header.get("x-tenant-id") ?? ""}`;
  return (next) => {
    const first = auth((req) => {
      const scope = req.contextValues.get(scopeKey);
      if (scope !== undefined && scopes.size < 1000) scopes.set(keyOf(req), scope);
      return next(req);
    });
    return (req) => {
      const scope = scopes.get(keyOf(req));
      if (scope === undefined) return first(req);
      req.contextValues.set(scopeKey, { ...scope, requestId: deps.requestIdOf(req.contextValues) });
      return next(req);
    };
  };
}

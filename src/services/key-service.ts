import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { type Duration, durationMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { Key_Environment } from "../../gen/tenantd/v1/key_pb.js";
import {
  CreateKeyResponseSchema,
  CreateOwnerKeyResponseSchema,
  GetKeyResponseSchema,
  type KeyService,
  ListKeysResponseSchema,
  ListOwnerKeysResponseSchema,
  RevokeKeyResponseSchema,
  RevokeOwnerKeyResponseSchema,
  RotateKeyResponseSchema,
} from "../../gen/tenantd/v1/key_service_pb.js";
import type { Clock } from "../domain/clock.js";
import { DomainError, invalidFields, keyNotFound, tenantNotFound } from "../domain/errors.js";
import { isTenantId } from "../domain/ids.js";
import { generateKey, type KeyEnv, type KeyKind, kidOf } from "../domain/key-format.js";
import { type PageTokens, pageSize } from "../domain/page-token.js";
import { isOwnerPermission, isTenantPermission, OWNER_PERMISSIONS, TENANT_PERMISSIONS } from "../domain/permissions.js";
import type { KeyRecord, TenantRecord } from "../domain/types.js";
import type { KeyStore, TenantStore } from "../store/ports.js";
import type { AuditRecorder } from "./audit.js";
import type { CallScope } from "./context.js";
import { keyToProto, msOf } from "./convert.js";
import type { InvalidationBus } from "./invalidation.js";
import type { KeyVerifier } from "./key-verifier.js";
import { scopeOf } from "./util.js";
import { createVerifyAnswers } from "./verify-answer.js";

export interface KeyServiceDeps {
  keys: KeyStore;
  tenants: Pick<TenantStore, "get">;
  verifier: Pick<KeyVerifier, "verify">;
  clock: Clock;
  pageTokens: PageTokens;
  bus: Pick<InvalidationBus, "publish">;
  audit: AuditRecorder;
}

const SVC = "tenantd.v1.KeyService";
const DEFAULT_GRACE_MS = 24 * 60 * 60 * 1000;

/**
 * Issues a key record and its secret. Shared by tenant keys, owner keys and the owner-key
 * bootstrap so that the format, hashing and defaults live in one place.
 */
export function issueKey(input: {
  kind: KeyKind;
  env: KeyEnv;
  tenantId: string | null;
  label: string;
  permissions: string[];
  expiresAt: number | null;
  now: number;
}): { record: KeyRecord; apiKey: string } {
  const g = generateKey(input.kind, input.env);
  return {
    apiKey: g.apiKey,
    record: {
      kid: g.kid,
      tenantId: input.tenantId,
      kind: input.kind,
      env: input.env,
      label: input.label,
      permissions: input.permissions,
      hash: g.hash,
      lastFour: g.lastFour,
      createdAt: input.now,
      expiresAt: input.expiresAt,
      revokedAt: null,
      lastUsedAt: null,
      rotatedAt: null,
      prevHash: null,
      prevValidUntil: null,
      prevLastUsedAt: null,
    },
  };
}

export function createKeyService(deps: KeyServiceDeps): ServiceImpl<typeof KeyService> {
  const { keys, tenants, verifier, clock, pageTokens, bus, audit } = deps;
  const verifyAnswer = createVerifyAnswers();

  /**
   * The tenant a tenant-key RPC acts on. Owner keys name it in `tenant_id` (or with
   * `x-tenant-id`); tenant keys act on their own tenant, and naming another one answers
   * NOT_FOUND, exactly as for a tenant that does not exist.
   */
  async function targetTenant(scope: CallScope, requested: string): Promise<TenantRecord> {
    let id: string;
    if (requested === "") {
      if (scope.tenantId === null) {
        throw new DomainError(
          "failed_precondition",
          "TENANT_CONTEXT_REQUIRED",
          "name the tenant: tenant_id in the request (or the x-tenant-id header)",
        );
      }
      id = scope.tenantId;
    } else {
      // A tenant key, and an owner key acting on behalf of a tenant (exactly as if the tenant's
      // key were used), reach only that tenant; any other id answers as if it did not exist.
      if ((scope.principal.key.kind === "tenant" || scope.actingAs) && requested !== scope.tenantId) {
        throw tenantNotFound(requested);
      }
      id = requested;
    }
    if (!isTenantId(id)) throw tenantNotFound(id);
    const t = await tenants.get(id);
    if (!t) throw tenantNotFound(id);
    return t;
  }

  function kidOrNotFound(keyId: string): string {
    const kid = kidOf(keyId);
    if (kid === null) throw keyNotFound(keyId);
    return kid;
  }

  function expiry(t: Timestamp | undefined, now: number): number | null {
    const ms = msOf(t);
    if (ms !== null && ms <= now) {
      throw invalidFields([{ field: "expire_time", description: "must be in the future" }]);
    }
    return ms;
  }

  /**
   * The permissions a new key gets: the requested ones, each known and of the allowed kind, and
   * never more than the caller holds (a key cannot mint a more powerful key).
   */
  function grant(
    scope: CallScope,
    requested: string[],
    known: (p: string) => boolean,
    all: readonly string[],
  ): string[] {
    const held = new Set(scope.principal.key.permissions);
    const bad = requested
      .map((p, i) => ({ p, i }))
      .filter(({ p }) => !known(p))
      .map(({ p, i }) => ({ field: `permissions[${i}]`, description: `unknown permission "${p}"` }));
    if (bad.length > 0) throw invalidFields(bad);
    if (requested.length === 0) return all.filter((p) => held.has(p));
    const missing = requested.filter((p) => !held.has(p));
    if (missing.length > 0) {
      throw new DomainError(
        "permission_denied",
        "PERMISSION_MISSING",
        `cannot grant permissions the caller lacks: ${missing.join(", ")}`,
        {
          metadata: { permission: missing.join(",") },
        },
      );
    }
    return [...requested];
  }

  function listPage(records: KeyRecord[], limit: number, query: string) {
    const page = records.slice(0, limit);
    const last = page[page.length - 1];
    const now = clock.now();
    return {
      keys: page.map((k) => keyToProto(k, now)),
      nextPageToken:
        records.length > limit && last ? pageTokens.encode({ t: last.createdAt, id: last.kid }, query) : "",
    };
  }

  async function revoke(scope: CallScope, tenantId: string | null, keyId: string) {
    const kid = kidOrNotFound(keyId);
    const existing = await keys.get(tenantId, kid);
    if (!existing) throw keyNotFound(keyId);
    if (existing.revokedAt !== null) {
      throw new DomainError("failed_precondition", "STATE_CONFLICT", "the key is already revoked", {
        metadata: { key_id: keyId },
      });
    }
    const revoked = await keys.revoke(tenantId, kid, clock.now());
    if (!revoked) throw keyNotFound(keyId);
    await bus.publish({ kind: "key", kid });
    if (tenantId !== null) await audit.record(scope, tenantId, `${SVC}/RevokeKey`, keyId);
    return revoked;
  }

  return {
    async createKey(req, ctx) {
      const scope = scopeOf(ctx);
      const tenant = await targetTenant(scope, req.tenantId);
      const now = clock.now();
      const permissions = grant(scope, req.permissions, isTenantPermission, TENANT_PERMISSIONS);
      const { record, apiKey } = issueKey({
        kind: "tenant",
        env: tenant.environment === "live" ? "live" : "test",
        tenantId: tenant.id,
        label: req.label,
        permissions,
        expiresAt: expiry(req.expireTime, now),
        now,
      });
      await keys.insert(record);
      const key = keyToProto(record, now);
      await audit.record(scope, tenant.id, `${SVC}/CreateKey`, key.id, { permissions: permissions.join(",") });
      return create(CreateKeyResponseSchema, { key, apiKey });
    },

    async listKeys(req, ctx) {
      const tenant = await targetTenant(scopeOf(ctx), req.tenantId);
      const query = `keys|${tenant.id}|${req.includeRevoked}`;
      const limit = pageSize(req.pageSize);
      const records = await keys.list({
        tenantId: tenant.id,
        includeRevoked: req.includeRevoked,
        after: pageTokens.decode(req.pageToken, query),
        limit: limit + 1,
      });
      return create(ListKeysResponseSchema, listPage(records, limit, query));
    },

    async getKey(req, ctx) {
      const tenant = await targetTenant(scopeOf(ctx), req.tenantId);
      const record = await keys.get(tenant.id, kidOrNotFound(req.keyId));
      if (!record) throw keyNotFound(req.keyId);
      return create(GetKeyResponseSchema, { key: keyToProto(record, clock.now()) });
    },

    async revokeKey(req, ctx) {
      const scope = scopeOf(ctx);
      const tenant = await targetTenant(scope, req.tenantId);
      const revoked = await revoke(scope, tenant.id, req.keyId);
      return create(RevokeKeyResponseSchema, { key: keyToProto(revoked, clock.now()) });
    },

    async rotateKey(req, ctx) {
      const scope = scopeOf(ctx);
      const tenant = await targetTenant(scope, req.tenantId);
      const kid = kidOrNotFound(req.keyId);
      const existing = await keys.get(tenant.id, kid);
      if (!existing) throw keyNotFound(req.keyId);
      const now = clock.now();
      if (existing.revokedAt !== null || (existing.expiresAt !== null && now >= existing.expiresAt)) {
        throw new DomainError("failed_precondition", "STATE_CONFLICT", "only active keys can be rotated", {
          metadata: { key_id: req.keyId },
        });
      }
      const graceMs = req.gracePeriod ? durationMs(req.gracePeriod as Duration) : DEFAULT_GRACE_MS;
      const g = generateKey(existing.kind, existing.env, kid);
      const rotated = await keys.rotate(tenant.id, kid, {
        hash: g.hash,
        lastFour: g.lastFour,
        at: now,
        prevValidUntil: now + graceMs,
      });
      if (!rotated) throw keyNotFound(req.keyId);
      await bus.publish({ kind: "key", kid });
      await audit.record(scope, tenant.id, `${SVC}/RotateKey`, req.keyId, { grace_ms: String(graceMs) });
      return create(RotateKeyResponseSchema, { key: keyToProto(rotated, now), apiKey: g.apiKey });
    },

    verifyKey(req) {
      const v = verifier.verify(req.apiKey);
      return v instanceof Promise
        ? v.then((done) => verifyAnswer(done, req.permission))
        : verifyAnswer(v, req.permission);
    },

    async createOwnerKey(req, ctx) {
      const scope = scopeOf(ctx);
      const now = clock.now();
      const permissions = grant(scope, req.permissions, isOwnerPermission, OWNER_PERMISSIONS);
      const { record, apiKey } = issueKey({
        kind: "owner",
        env: req.environment === Key_Environment.TEST ? "test" : "live",
        tenantId: null,
        label: req.label,
        permissions,
        expiresAt: expiry(req.expireTime, now),
        now,
      });
      await keys.insert(record);
      return create(CreateOwnerKeyResponseSchema, { key: keyToProto(record, now), apiKey });
    },

    async listOwnerKeys(req) {
      const query = `owner-keys|${req.includeRevoked}`;
      const limit = pageSize(req.pageSize);
      const records = await keys.list({
        tenantId: null,
        includeRevoked: req.includeRevoked,
        after: pageTokens.decode(req.pageToken, query),
        limit: limit + 1,
      });
      return create(ListOwnerKeysResponseSchema, listPage(records, limit, query));
    },

    async revokeOwnerKey(req, ctx) {
      const scope = scopeOf(ctx);
      const kid = kidOrNotFound(req.keyId);
      const existing = await keys.get(null, kid);
      if (!existing) throw keyNotFound(req.keyId);
      const now = clock.now();
      const active = existing.revokedAt === null && (existing.expiresAt === null || existing.expiresAt > now);
      if (active && existing.permissions.includes("owner-keys:write")) {
        if ((await keys.countActiveOwnerKeys("owner-keys:write", now)) <= 1) {
          throw new DomainError(
            "failed_precondition",
            "STATE_CONFLICT",
            "this is the last active owner key that can manage owner keys; create another one first",
            { metadata: { key_id: req.keyId } },
          );
        }
      }
      const revoked = await revoke(scope, null, req.keyId);
      return create(RevokeOwnerKeyResponseSchema, { key: keyToProto(revoked, clock.now()) });
    },
  };
}

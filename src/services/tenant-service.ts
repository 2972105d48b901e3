import { randomBytes } from "node:crypto";
import { create, toJson } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type CreateTenantRequest,
  CreateTenantRequestSchema,
  CreateTenantResponseSchema,
  DeleteCurrentTenantResponseSchema,
  DeleteTenantResponseSchema,
  GetCurrentTenantResponseSchema,
  GetTenantResponseSchema,
  ListTenantsResponseSchema,
  type TenantService,
  type UpdateCurrentTenantRequest,
  UpdateCurrentTenantResponseSchema,
  type UpdateTenantRequest,
  UpdateTenantResponseSchema,
} from "../../gen/tenantd/v1/tenant_service_pb.js";
import type { Clock } from "../domain/clock.js";
import { DomainError, type FieldViolation, immutableField, invalidFields, tenantNotFound } from "../domain/errors.js";
import { isTenantId, newId } from "../domain/ids.js";
import { type PageTokens, pageSize } from "../domain/page-token.js";
import type { TenantEnvironment, TenantPatch, TenantRecord } from "../domain/types.js";
import { isCurrency, isTimeZone, isWebhookUrl, SLUG_RE, slugify } from "../domain/values.js";
import type { TenantStore } from "../store/ports.js";
import type { AuditRecorder } from "./audit.js";
import type { CallScope } from "./context.js";
import { etagOf, tenantEnvFromProto, tenantStatusFromProto, tenantToProto, ts, versionOfEtag } from "./convert.js";
import type { InvalidationBus } from "./invalidation.js";
import { canonicalHash, currentTenantId, scopeOf } from "./util.js";

export interface TenantServiceDeps {
  tenants: TenantStore;
  clock: Clock;
  pageTokens: PageTokens;
  bus: Pick<InvalidationBus, "publish">;
  audit: AuditRecorder;
  /**
   * Runs after a tenant is deleted, e.g. to remove its Redis keys at once. A failure is reported
   * to `onCleanupError` and does not undo the deletion (the keys expire by themselves).
   */
  afterDelete?: (tenantId: string) => Promise<void>;
  onCleanupError?: (err: unknown) => void;
}

const SVC = "tenantd.v1.TenantService";
/** How long a CreateTenant request_id is remembered (the contract says 24 hours). */
const REQUEST_ID_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * Checks values protovalidate cannot: time zone, currency, webhook URL (https only for live
 * tenants: plain http is a sandbox convenience) and its switch.
 */
function checkSettings(
  s: {
    environment: TenantEnvironment;
    timezone?: string;
    defaultCurrency?: string;
    webhookUrl?: string;
    webhookEnabled?: boolean;
  },
  violations: Array<Omit<FieldViolation, "reason">>,
): void {
  if (s.timezone !== undefined && !isTimeZone(s.timezone)) {
    violations.push({ field: "timezone", description: "must be an IANA time zone name such as Europe/Paris or UTC" });
  }
  if (s.defaultCurrency !== undefined && !isCurrency(s.defaultCurrency)) {
    violations.push({ field: "default_currency", description: "must be an ISO 4217 currency code such as USD" });
  }
  if (s.webhookUrl !== undefined && s.webhookUrl !== "" && !isWebhookUrl(s.webhookUrl)) {
    violations.push({ field: "webhook_url", description: "must be an http(s) URL with a host and no credentials" });
  } else if (s.environment === "live" && s.webhookUrl?.startsWith("http://")) {
    violations.push({ field: "webhook_url", description: "must be an https URL for a live tenant" });
  }
  if (s.webhookEnabled === true && (s.webhookUrl ?? "") === "") {
    violations.push({ field: "webhook_enabled", description: "needs a webhook_url" });
  }
}

/** Fields UpdateTenant may change, by proto name. */
const OWNER_UPDATABLE = [
  "name",
  "email",
  "plan",
  "status",
  "default_currency",
  "timezone",
  "webhook_url",
  "webhook_enabled",
  "metadata",
] as const;
/** Fields UpdateCurrentTenant may change: tenant-wide settings, not plan or status. */
const TENANT_UPDATABLE = [
  "name",
  "email",
  "default_currency",
  "timezone",
  "webhook_url",
  "webhook_enabled",
  "metadata",
] as const;
type UpdatableField = (typeof OWNER_UPDATABLE)[number];

type UpdateFields = Pick<
  UpdateTenantRequest,
  | "name"
  | "email"
  | "defaultCurrency"
  | "timezone"
  | "webhookUrl"
  | "webhookEnabled"
  | "metadata"
  | "updateMask"
  | "etag"
  | "slug"
  | "environment"
> &
  Partial<Pick<UpdateTenantRequest, "plan" | "status">> &
  Partial<Pick<UpdateCurrentTenantRequest, "id">>;

export function createTenantService(deps: TenantServiceDeps): ServiceImpl<typeof TenantService> {
  const { tenants, clock, pageTokens, bus, audit } = deps;

  async function load(id: string): Promise<TenantRecord> {
    if (!isTenantId(id)) throw tenantNotFound(id);
    const t = await tenants.get(id);
    if (!t) throw tenantNotFound(id);
    return t;
  }

  /** Turns an update request into a patch: presence-based, or exactly the fields of update_mask. */
  function toPatch(current: TenantRecord, req: UpdateFields, allowed: readonly UpdatableField[]): TenantPatch {
    if (req.id !== undefined && req.id !== current.id) throw immutableField("id");
    if (req.slug !== undefined && req.slug !== current.slug) throw immutableField("slug");
    if (req.environment !== undefined && tenantEnvFromProto(req.environment) !== current.environment) {
      throw immutableField("environment");
    }
    let fields: Set<UpdatableField>;
    if (req.updateMask && req.updateMask.paths.length > 0) {
      fields = new Set();
      for (const p of req.updateMask.paths) {
        if (p === "slug" || p === "environment" || p === "id") throw immutableField(p);
        if (!(allowed as readonly string[]).includes(p)) {
          throw invalidFields([{ field: "update_mask", description: `"${p}" is not an updatable field` }]);
        }
        fields.add(p as UpdatableField);
      }
    } else {
      const present: Record<UpdatableField, boolean> = {
        name: req.name !== undefined,
        email: req.email !== undefined,
        plan: req.plan !== undefined,
        status: req.status !== undefined,
        default_currency: req.defaultCurrency !== undefined,
        timezone: req.timezone !== undefined,
        webhook_url: req.webhookUrl !== undefined,
        webhook_enabled: req.webhookEnabled !== undefined,
        // A map has no presence: an empty map means "unchanged" unless update_mask names it.
        metadata: Object.keys(req.metadata).length > 0,
      };
      fields = new Set(allowed.filter((f) => present[f]));
    }
    const patch: TenantPatch = {};
    const violations: Array<Omit<FieldViolation, "reason">> = [];
    for (const f of fields) {
      switch (f) {
        case "name":
          if (!req.name) violations.push({ field: "name", description: "must not be empty" });
          else patch.name = req.name;
          break;
        case "email":
          if (!req.email) violations.push({ field: "email", description: "must not be empty" });
          else patch.email = req.email;
          break;
        case "plan":
          patch.plan = req.plan || "free";
          break;
        case "status": {
          const s = req.status === undefined ? undefined : tenantStatusFromProto(req.status);
          if (!s) violations.push({ field: "status", description: "must be ACTIVE or SUSPENDED" });
          else patch.status = s;
          break;
        }
        case "default_currency":
          patch.defaultCurrency = req.defaultCurrency || "USD";
          break;
        case "timezone":
          patch.timezone = req.timezone || "UTC";
          break;
        case "webhook_url":
          patch.webhookUrl = req.webhookUrl ?? "";
          break;
        case "webhook_enabled":
          patch.webhookEnabled = req.webhookEnabled ?? false;
          break;
        case "metadata":
          patch.metadata = { ...req.metadata };
          break;
      }
    }
    checkSettings(
      {
        environment: current.environment,
        timezone: patch.timezone,
        defaultCurrency: patch.defaultCurrency,
        webhookUrl: patch.webhookUrl ?? current.webhookUrl,
        webhookEnabled: patch.webhookEnabled ?? (patch.webhookUrl === "" ? false : current.webhookEnabled),
      },
      violations,
    );
    if (violations.length > 0) throw invalidFields(violations);
    // Removing the URL switches delivery off rather than leaving an enabled webhook with no target.
    if (patch.webhookUrl === "" && patch.webhookEnabled === undefined) patch.webhookEnabled = false;
    return patch;
  }

  async function update(
    scope: CallScope,
    tenantId: string,
    req: UpdateFields,
    allowed: readonly UpdatableField[],
    method: string,
  ): Promise<TenantRecord> {
    const current = await load(tenantId);
    const patch = toPatch(current, req, allowed);
    let expectedVersion: number | undefined;
    if (req.etag !== "") {
      const v = versionOfEtag(req.etag);
      if (v === null || v !== current.version) {
        throw new DomainError("aborted", "ETAG_MISMATCH", "the tenant changed since the etag was read", {
          metadata: { etag: etagOf(current) },
        });
      }
      expectedVersion = v;
    }
    if (Object.keys(patch).length === 0) return current;
    const updated = await tenants.update(tenantId, patch, clock.now(), expectedVersion);
    if (updated === null) throw tenantNotFound(tenantId);
    if (updated === "etag_mismatch") {
      throw new DomainError("aborted", "ETAG_MISMATCH", "the tenant changed since the etag was read");
    }
    // Status decides whether the tenant's keys work; plan and time zone decide its limits and
    // periods. Every replica's caches of them drop at once.
    if (
      (patch.status !== undefined && patch.status !== current.status) ||
      (patch.plan !== undefined && patch.plan !== current.plan) ||
      (patch.timezone !== undefined && patch.timezone !== current.timezone)
    ) {
      await bus.publish({ kind: "tenant", tenantId });
    }
    await audit.record(scope, tenantId, method, "tenant", { fields: Object.keys(patch).sort().join(",") });
    return updated;
  }

  async function remove(scope: CallScope, tenantId: string) {
    if (!isTenantId(tenantId)) throw tenantNotFound(tenantId);
    const tomb = await tenants.delete(tenantId, scope.principal.keyId, clock.now());
    if (!tomb) throw tenantNotFound(tenantId);
    await bus.publish({ kind: "tenant", tenantId });
    if (deps.afterDelete) await deps.afterDelete(tenantId).catch((err) => deps.onCleanupError?.(err));
    return { tenantId, deleteTime: ts(tomb.deletedAt) };
  }

  async function uniqueDerivedSlug(name: string): Promise<string> {
    const base = slugify(name);
    if (!(await tenants.slugInUse(base))) return base;
    for (let i = 0; i < 5; i++) {
      const candidate = `${base}-${randomBytes(3).toString("hex")}`;
      if (!(await tenants.slugInUse(candidate))) return candidate;
    }
    return `${base}-${randomBytes(6).toString("hex")}`;
  }

  function requestHash(req: CreateTenantRequest): string {
    return canonicalHash(toJson(CreateTenantRequestSchema, { ...req, requestId: "" }));
  }

  return {
    async createTenant(req, ctx) {
      const scope = scopeOf(ctx);
      const violations: Array<Omit<FieldViolation, "reason">> = [];
      const settings = {
        environment: tenantEnvFromProto(req.environment) ?? ("sandbox" as const),
        timezone: req.timezone || "UTC",
        defaultCurrency: req.defaultCurrency || "USD",
        webhookUrl: req.webhookUrl,
        webhookEnabled: req.webhookEnabled,
      };
      checkSettings(settings, violations);
      if (req.slug !== "" && !SLUG_RE.test(req.slug)) {
        violations.push({ field: "slug", description: "must be 1 to 63 characters of a-z, 0-9 and -" });
      }
      if (violations.length > 0) throw invalidFields(violations);

      const claim =
        req.requestId === ""
          ? undefined
          : {
              scope: "CreateTenant",
              requestId: req.requestId,
              requestHash: requestHash(req),
              ttlMs: REQUEST_ID_TTL_MS,
            };
      for (let attempt = 0; attempt < 3; attempt++) {
        const now = clock.now();
        const record: TenantRecord = {
          id: newId("ten", now),
          name: req.name,
          email: req.email,
          slug: req.slug !== "" ? req.slug : await uniqueDerivedSlug(req.name),
          environment: settings.environment,
          status: "active",
          plan: req.plan || "free",
          defaultCurrency: settings.defaultCurrency,
          timezone: settings.timezone,
          webhookUrl: req.webhookUrl,
          webhookEnabled: req.webhookEnabled,
          metadata: { ...req.metadata },
          createdAt: now,
          updatedAt: now,
          version: 1,
        };
        const result = await tenants.create(record, claim);
        switch (result.kind) {
          case "created":
            await audit.record(scope, result.tenant.id, `${SVC}/CreateTenant`, "tenant");
            return create(CreateTenantResponseSchema, { tenant: tenantToProto(result.tenant) });
          case "replayed":
            return create(CreateTenantResponseSchema, { tenant: tenantToProto(result.tenant) });
          case "conflict":
            throw new DomainError(
              "failed_precondition",
              "REQUEST_ID_CONFLICT",
              "request_id was already used with a different request",
              { metadata: { request_id: req.requestId } },
            );
          case "slug_taken":
            if (req.slug !== "") {
              throw new DomainError("already_exists", "SLUG_TAKEN", `slug "${req.slug}" is taken`, {
                metadata: { slug: req.slug },
              });
            }
          // A derived slug raced another create: derive again.
        }
      }
      throw new DomainError("aborted", "SLUG_TAKEN", "could not find a free slug; send one explicitly");
    },

    async listTenants(req) {
      const status = tenantStatusFromProto(req.status);
      const environment = tenantEnvFromProto(req.environment);
      const query = `tenants|${status ?? ""}|${environment ?? ""}|${req.plan}`;
      const after = pageTokens.decode(req.pageToken, query);
      const limit = pageSize(req.pageSize);
      const rows = await tenants.list({
        status,
        environment,
        plan: req.plan === "" ? undefined : req.plan,
        after,
        limit: limit + 1,
      });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return create(ListTenantsResponseSchema, {
        tenants: page.map(tenantToProto),
        nextPageToken: rows.length > limit && last ? pageTokens.encode({ t: last.createdAt, id: last.id }, query) : "",
      });
    },

    async getTenant(req) {
      return create(GetTenantResponseSchema, { tenant: tenantToProto(await load(req.tenantId)) });
    },

    async updateTenant(req, ctx) {
      const scope = scopeOf(ctx);
      const t = await update(scope, req.tenantId, req, OWNER_UPDATABLE, `${SVC}/UpdateTenant`);
      return create(UpdateTenantResponseSchema, { tenant: tenantToProto(t) });
    },

    async deleteTenant(req, ctx) {
      return create(DeleteTenantResponseSchema, await remove(scopeOf(ctx), req.tenantId));
    },

    async getCurrentTenant(_req, ctx: HandlerContext) {
      const tenantId = currentTenantId(scopeOf(ctx));
      return create(GetCurrentTenantResponseSchema, { tenant: tenantToProto(await load(tenantId)) });
    },

    async updateCurrentTenant(req, ctx) {
      const scope = scopeOf(ctx);
      const t = await update(scope, currentTenantId(scope), req, TENANT_UPDATABLE, `${SVC}/UpdateCurrentTenant`);
      return create(UpdateCurrentTenantResponseSchema, { tenant: tenantToProto(t) });
    },

    async deleteCurrentTenant(_req, ctx) {
      const scope = scopeOf(ctx);
      return create(DeleteCurrentTenantResponseSchema, await remove(scope, currentTenantId(scope)));
    },
  };
}

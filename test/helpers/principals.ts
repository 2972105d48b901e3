// The callers of the authorization matrix and their expected outcomes, computed from an RPC's
// `(tenantd.v1.access)` option (never from a hand-written table), shared by the RPC matrix
// (test/rpc/authz-matrix.test.ts: gRPC, Connect, gRPC-Web) and the REST column
// (test/rest/authz-matrix-rest.test.ts), so every protocol is held to the same expectations.
//
// Order of the checks (the documented precedence the rules below encode): key missing/malformed →
// key revoked/expired/rotated → tenant suspended → `x-tenant-id` sent by a tenant key for another
// tenant → owner-only RPC called with a tenant key → tenant context missing → permission missing.
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type CallOptions, Code } from "@connectrpc/connect";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import type { Access } from "../../gen/tenantd/v1/options_pb.js";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { PENDING_SERVICES } from "../../src/app.js";
import { newId } from "../../src/domain/ids.js";
import { OWNER_PERMISSIONS, TENANT_PERMISSIONS } from "../../src/domain/permissions.js";
import { Audience } from "../../src/transport/access.js";
import type { Harness } from "./app.js";

/** Reasons that mean "refused by authentication or authorization". */
export const AUTH_REASONS = new Set([
  "KEY_MISSING",
  "KEY_INVALID",
  "KEY_REVOKED",
  "KEY_EXPIRED",
  "KEY_ROTATED",
  "TENANT_SUSPENDED",
  "PERMISSION_MISSING",
  "OWNER_KEY_REQUIRED",
  "ACT_AS_FORBIDDEN",
  "TENANT_CONTEXT_REQUIRED",
]);

/** RPCs that change or destroy the caller's resources even with an empty request. */
export const DESTRUCTIVE = new Set([
  "tenantd.v1.TenantService/DeleteCurrentTenant",
  "tenantd.v1.TenantService/DeleteTenant",
  "tenantd.v1.KeyService/RevokeKey",
  "tenantd.v1.KeyService/RotateKey",
  "tenantd.v1.KeyService/RevokeOwnerKey",
]);

export type Expected =
  | { kind: "refused"; code: Code; reason: string }
  | { kind: "pass" /** auth-looking reasons the handler itself may give */; allow?: string[] };

export interface Principal {
  name: string;
  /** Builds the call options. `perm` is the RPC's permission, for callers that depend on it. */
  build(perm: string, access: Access): Promise<CallOptions>;
  /** Whether the caller depends on the RPC (cache key includes the permission and audience). */
  perRpc?: boolean;
  expect(access: Access): Expected;
}

const refused = (code: Code, reason: string): Expected => ({ kind: "refused", code, reason });
const pass: Expected = { kind: "pass" };

/** The shared tenant most callers belong to; no destructive call may reach it. */
export interface HomeTenant {
  id: string;
  key: string;
  keyId: string;
}

/**
 * Creates the matrix's callers on `h`: tenants, keys (read-only, revoked, expired, rotated past
 * grace), narrow owner keys. Moves `h.clock` forward by two minutes (past expiry and grace).
 */
export async function buildPrincipals(h: Harness): Promise<{ principals: Principal[]; home: HomeTenant }> {
  const owner = h.ownerKey;
  const keys = h.client(KeyService);
  const tenants = h.client(TenantService);
  const newTenant = async (permissions?: string[]) => {
    const t = await h.newTenant(permissions ? { permissions } : {});
    return { id: t.tenant.id, key: t.key, keyId: t.keyId };
  };
  const tenantKey = async (tenantId: string, permissions: string[], expireMs?: number) => {
    const res = await keys.createKey(
      {
        tenantId,
        label: "matrix",
        permissions,
        ...(expireMs !== undefined ? { expireTime: timestampFromMs(expireMs) } : {}),
      },
      h.as(owner),
    );
    return { key: res.apiKey, keyId: res.key?.id ?? "" };
  };
  const ownerKey = async (permissions: string[]) =>
    (await keys.createOwnerKey({ label: "matrix", permissions }, h.as(owner))).apiKey;
  const suspend = async (tenantId: string) => {
    await tenants.updateTenant({ tenantId, status: Tenant_Status.SUSPENDED }, h.as(owner));
  };

  const home = await newTenant();
  const other = await newTenant();
  const suspended = await newTenant();
  await suspend(suspended.id);
  const readOnly = await tenantKey(
    home.id,
    TENANT_PERMISSIONS.filter((p) => p.endsWith(":read")),
  );
  const revoked = await tenantKey(home.id, []);
  await keys.revokeKey({ tenantId: home.id, keyId: revoked.keyId }, h.as(owner));
  // Expired and rotated-past-grace keys: issue, then move the clock past expiry and grace.
  const expired = await tenantKey(home.id, [], h.clock.now() + 60_000);
  const rotated = await tenantKey(home.id, []);
  await keys.rotateKey({ tenantId: home.id, keyId: rotated.keyId, gracePeriod: durationFromMs(60_000) }, h.as(owner));
  h.clock.advance(120_000);
  const unknownTenant = newId("ten");
  const ownerAccess = (a: Access) => a.audience === Audience.OWNER;

  const principals: Principal[] = [
    {
      name: "owner",
      build: async () => h.as(await ownerKey([])),
      expect: (a) =>
        a.audience === Audience.TENANT
          ? refused(Code.FailedPrecondition, "TENANT_CONTEXT_REQUIRED")
          : // OWNER_OR_TENANT with an empty tenant_id: auth passes, the handler needs a tenant.
            a.audience === Audience.OWNER_OR_TENANT
            ? { kind: "pass", allow: ["TENANT_CONTEXT_REQUIRED"] }
            : pass,
    },
    {
      name: "owner-as-tenant",
      build: async () => h.as(owner, (await newTenant()).id),
      expect: () => pass,
    },
    {
      name: "tenant-admin",
      build: async () => h.as((await newTenant()).key),
      expect: (a) => (ownerAccess(a) ? refused(Code.PermissionDenied, "OWNER_KEY_REQUIRED") : pass),
    },
    {
      name: "tenant-read-only",
      build: async () => h.as(readOnly.key),
      expect: (a) =>
        ownerAccess(a)
          ? refused(Code.PermissionDenied, "OWNER_KEY_REQUIRED")
          : a.permission.endsWith(":read")
            ? pass
            : refused(Code.PermissionDenied, "PERMISSION_MISSING"),
    },
    {
      name: "tenant-missing-perm",
      perRpc: true,
      build: async (perm) =>
        h.as(
          (
            await tenantKey(
              home.id,
              TENANT_PERMISSIONS.filter((p) => p !== perm),
            )
          ).key,
        ),
      expect: (a) =>
        ownerAccess(a)
          ? refused(Code.PermissionDenied, "OWNER_KEY_REQUIRED")
          : refused(Code.PermissionDenied, "PERMISSION_MISSING"),
    },
    {
      name: "owner-missing-perm",
      perRpc: true,
      build: async (perm, a) => {
        const k = await ownerKey(OWNER_PERMISSIONS.filter((p) => p !== perm));
        return ownerAccess(a) ? h.as(k) : h.as(k, home.id);
      },
      expect: () => refused(Code.PermissionDenied, "PERMISSION_MISSING"),
    },
    {
      name: "expired",
      build: async () => h.as(expired.key),
      expect: () => refused(Code.Unauthenticated, "KEY_EXPIRED"),
    },
    {
      name: "revoked",
      build: async () => h.as(revoked.key),
      expect: () => refused(Code.Unauthenticated, "KEY_REVOKED"),
    },
    {
      name: "rotated-past-grace",
      build: async () => h.as(rotated.key),
      expect: () => refused(Code.Unauthenticated, "KEY_ROTATED"),
    },
    {
      name: "suspended-tenant",
      build: async () => h.as(suspended.key),
      expect: () => refused(Code.PermissionDenied, "TENANT_SUSPENDED"),
    },
    {
      name: "other-tenant-act-as",
      build: async () => h.as(other.key, home.id),
      expect: () => refused(Code.PermissionDenied, "ACT_AS_FORBIDDEN"),
    },
    {
      name: "tenant-own-act-as",
      build: async () => {
        const t = await newTenant();
        return h.as(t.key, t.id);
      },
      expect: (a) => (ownerAccess(a) ? refused(Code.PermissionDenied, "OWNER_KEY_REQUIRED") : pass),
    },
    {
      // The owner still manages a suspended tenant.
      name: "owner-as-suspended",
      build: async () => {
        const t = await newTenant();
        await suspend(t.id);
        return h.as(owner, t.id);
      },
      expect: () => pass,
    },
    {
      name: "owner-as-unknown",
      build: async () => h.as(owner, unknownTenant),
      expect: (a) => (ownerAccess(a) ? pass : refused(Code.NotFound, "TENANT_NOT_FOUND")),
    },
    {
      name: "no-key",
      build: async () => ({}),
      expect: () => refused(Code.Unauthenticated, "KEY_MISSING"),
    },
    {
      name: "malformed-key",
      build: async () => ({ headers: { authorization: "Bearer tdk_tenant_live_notakey" } }),
      expect: () => refused(Code.Unauthenticated, "KEY_INVALID"),
    },
  ];
  return { principals, home };
}

/** What a call answered: `Code[code]` ("OK" on success) and the tenantd ErrorInfo reason. */
export interface Outcome {
  code: string;
  reason: string;
}

/**
 * Whether `got` is what `expected` allows. An expected refusal must match code and reason exactly;
 * "passes auth" means the answer is not one of the auth reasons (it may be OK, a validation error,
 * NOT_FOUND, or UNIMPLEMENTED NOT_IMPLEMENTED for a pending service).
 */
export function matchesExpected(service: DescService, expected: Expected, got: Outcome): boolean {
  if (expected.kind === "refused") return got.code === Code[expected.code] && got.reason === expected.reason;
  if (got.code === "OK") return !PENDING_SERVICES.includes(service);
  if (expected.allow?.includes(got.reason)) return true;
  if (AUTH_REASONS.has(got.reason) || got.reason.startsWith("(no ErrorInfo)")) return false;
  if (["Unknown", "Internal", "Unauthenticated", "PermissionDenied"].includes(got.code)) return false;
  if (PENDING_SERVICES.includes(service)) {
    // Validation runs before the (unimplemented) handler: an empty request may fail it first.
    return (
      (got.code === "Unimplemented" && got.reason === "NOT_IMPLEMENTED") ||
      (got.code === "InvalidArgument" && got.reason === "FIELD_INVALID")
    );
  }
  return got.code !== "Unimplemented";
}

export const showExpected = (e: Expected) => (e.kind === "pass" ? "passes auth" : `${Code[e.code]} ${e.reason}`);

/** One call of the matrix: an RPC (and, on REST, one of its routes) × a caller × a protocol. */
export interface Cell {
  service: DescService;
  method: DescMethod;
  access: Access;
  principal: Principal;
  /** "grpc", "connect", "grpc-web", or "rest <METHOD> <template>". */
  protocol: string;
  expected: Expected;
  destructive: boolean;
}

export interface MatrixRun {
  mismatches: Array<{ cell: Cell; got: Outcome }>;
  /** Outcomes by reason ("OK" for successes). */
  tally: Map<string, number>;
  ms: number;
}

/**
 * Runs every cell: first all that cannot destroy a shared caller's tenant or key (64 at a time),
 * then the destructive RPCs (16 at a time). Callers are shared (per RPC permission and audience
 * for the callers that depend on it), except that every destructive cell expected to pass auth
 * gets a fresh caller, so that an empty DeleteCurrentTenant only deletes a tenant of its own.
 */
export async function runMatrix(
  cells: Cell[],
  call: (cell: Cell, opts: CallOptions) => Promise<Outcome>,
  check: (cell: Cell, got: Outcome) => boolean = (cell, got) => matchesExpected(cell.service, cell.expected, got),
): Promise<MatrixRun> {
  const shared = new Map<string, Promise<CallOptions>>();
  const optsFor = (cell: Cell): Promise<CallOptions> => {
    const fresh = cell.destructive && cell.expected.kind === "pass";
    if (fresh) return cell.principal.build(cell.access.permission, cell.access);
    const k = cell.principal.perRpc
      ? `${cell.principal.name}|${cell.access.permission}|${cell.access.audience === Audience.OWNER}`
      : cell.principal.name;
    let p = shared.get(k);
    if (!p) {
      p = cell.principal.build(cell.access.permission, cell.access);
      shared.set(k, p);
    }
    return p;
  };

  const mismatches: MatrixRun["mismatches"] = [];
  const tally = new Map<string, number>();
  const run = async (batch: Cell[], chunk: number) => {
    for (let i = 0; i < batch.length; i += chunk) {
      await Promise.all(
        batch.slice(i, i + chunk).map(async (cell) => {
          const got = await call(cell, await optsFor(cell));
          const t = got.code === "OK" ? "OK" : got.reason;
          tally.set(t, (tally.get(t) ?? 0) + 1);
          if (!check(cell, got)) mismatches.push({ cell, got });
        }),
      );
    }
  };
  const started = Date.now();
  await run(
    cells.filter((c) => !c.destructive),
    64,
  );
  await run(
    cells.filter((c) => c.destructive),
    16,
  );
  return { mismatches, tally, ms: Date.now() - started };
}

/** A sorted, aligned table of mismatches for the test output. */
export function mismatchTable(mismatches: MatrixRun["mismatches"]): string {
  return mismatches
    .map(
      ({ cell, got }) =>
        `${`${cell.service.name}/${cell.method.name}`.padEnd(48)} ${cell.principal.name.padEnd(20)} ${cell.protocol.padEnd(8)} expected ${showExpected(cell.expected).padEnd(42)} got ${got.code} ${got.reason}`,
    )
    .sort()
    .join("\n");
}

// The authorization matrix: every RPC of the five tenantd services × every kind of caller × every
// RPC protocol, with the expected outcome computed from the RPC's `(tenantd.v1.access)` option
// (never from a hand-written table), so a new RPC is covered the day it is declared.
//
// Each RPC is called with its empty request. An expected refusal must match code and ErrorInfo
// reason exactly; "passes auth" means the answer is not one of the auth reasons (it may be OK, a
// validation error, NOT_FOUND, or UNIMPLEMENTED NOT_IMPLEMENTED for a pending service).
//
// Order of the checks (the documented precedence the rules below encode): key missing/malformed →
// key revoked/expired/rotated → tenant suspended → `x-tenant-id` sent by a tenant key for another
// tenant → owner-only RPC called with a tenant key → tenant context missing → permission missing.
//
// Destructive RPCs (an empty DeleteCurrentTenant deletes the caller's tenant) run after all the
// others, and every cell of theirs that is expected to pass auth gets its own fresh caller.
import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import type { Access } from "../../gen/tenantd/v1/options_pb.js";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { PENDING_SERVICES, TENANTD_SERVICES } from "../../src/app.js";
import { newId } from "../../src/domain/ids.js";
import { OWNER_PERMISSIONS, TENANT_PERMISSIONS } from "../../src/domain/permissions.js";
import { Audience, accessOf } from "../../src/transport/access.js";
import { type Harness, PROTOCOLS, type Protocol, startHarness } from "../helpers/app.js";

/** Reasons that mean "refused by authentication or authorization". */
const AUTH_REASONS = new Set([
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
const DESTRUCTIVE = new Set([
  "tenantd.v1.TenantService/DeleteCurrentTenant",
  "tenantd.v1.TenantService/DeleteTenant",
  "tenantd.v1.KeyService/RevokeKey",
  "tenantd.v1.KeyService/RotateKey",
  "tenantd.v1.KeyService/RevokeOwnerKey",
]);

type Expected =
  | { kind: "refused"; code: Code; reason: string }
  | { kind: "pass" /** auth-looking reasons the handler itself may give */; allow?: string[] };

interface Principal {
  name: string;
  /** Builds the call options. `perm` is the RPC's permission, for callers that depend on it. */
  build(perm: string, access: Access): Promise<CallOptions>;
  /** Whether the caller depends on the RPC (cache key includes the permission and audience). */
  perRpc?: boolean;
  expect(access: Access): Expected;
}

const refused = (code: Code, reason: string): Expected => ({ kind: "refused", code, reason });
const pass: Expected = { kind: "pass" };

let h: Harness;
let home: { id: string; key: string; keyId: string };
const principals: Principal[] = [];
const OPTS = { timeoutMs: 15_000 };

beforeAll(async () => {
  h = await startHarness();
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

  home = await newTenant();
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

  principals.push(
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
  );
}, 120_000);

afterAll(async () => {
  await h?.close();
});

interface Cell {
  service: DescService;
  method: DescMethod;
  access: Access;
  principal: Principal;
  protocol: Protocol;
  expected: Expected;
  destructive: boolean;
}

interface Outcome {
  code: string;
  reason: string;
}

async function call(cell: Cell, opts: CallOptions): Promise<Outcome> {
  const client = h.client(cell.service, cell.protocol) as unknown as Record<
    string,
    (req: unknown, o: CallOptions) => Promise<unknown> | AsyncIterable<unknown>
  >;
  const fn = client[cell.method.localName];
  if (!fn) throw new Error(`no client method ${cell.method.localName}`);
  try {
    const res = fn(create(cell.method.input), { ...OPTS, ...opts });
    if (cell.method.methodKind === "server_streaming") {
      for await (const _ of res as AsyncIterable<unknown>) {
        // drain
      }
    } else {
      await res;
    }
    return { code: "OK", reason: "" };
  } catch (e) {
    const err = ConnectError.from(e);
    const info = err.findDetails(ErrorInfoSchema)[0];
    return { code: Code[err.code], reason: info?.domain === "tenantd" ? info.reason : `(no ErrorInfo) ${err.message}` };
  }
}

function matches(cell: Cell, got: Outcome): boolean {
  const exp = cell.expected;
  if (exp.kind === "refused") return got.code === Code[exp.code] && got.reason === exp.reason;
  if (got.code === "OK") return !PENDING_SERVICES.includes(cell.service);
  if (exp.allow?.includes(got.reason)) return true;
  if (AUTH_REASONS.has(got.reason) || got.reason.startsWith("(no ErrorInfo)")) return false;
  if (["Unknown", "Internal", "Unauthenticated", "PermissionDenied"].includes(got.code)) return false;
  if (PENDING_SERVICES.includes(cell.service)) {
    // Validation runs before the (unimplemented) handler: an empty request may fail it first.
    return (
      (got.code === "Unimplemented" && got.reason === "NOT_IMPLEMENTED") ||
      (got.code === "InvalidArgument" && got.reason === "FIELD_INVALID")
    );
  }
  return got.code !== "Unimplemented";
}

const show = (e: Expected) => (e.kind === "pass" ? "passes auth" : `${Code[e.code]} ${e.reason}`);

it("every RPC × caller × protocol answers what its (access) option says", async () => {
  const cells: Cell[] = [];
  for (const service of TENANTD_SERVICES) {
    for (const method of service.methods) {
      const access = accessOf(method);
      expect(access, `${service.typeName}/${method.name} has no access option`).not.toBeNull();
      if (!access) continue;
      for (const principal of principals) {
        for (const protocol of PROTOCOLS) {
          cells.push({
            service,
            method,
            access,
            principal,
            protocol,
            expected: principal.expect(access),
            destructive: DESTRUCTIVE.has(`${service.typeName}/${method.name}`),
          });
        }
      }
    }
  }
  const rpcCount = TENANTD_SERVICES.reduce((n, s) => n + s.methods.length, 0);
  expect(cells.length).toBe(rpcCount * principals.length * PROTOCOLS.length);

  // Shared callers, built once (per RPC permission/audience for the callers that depend on it).
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

  const mismatches: Array<{ cell: Cell; got: Outcome }> = [];
  const tally = new Map<string, number>();
  const run = async (batch: Cell[], chunk: number) => {
    for (let i = 0; i < batch.length; i += chunk) {
      await Promise.all(
        batch.slice(i, i + chunk).map(async (cell) => {
          const got = await call(cell, await optsFor(cell));
          const t = got.code === "OK" ? "OK" : got.reason;
          tally.set(t, (tally.get(t) ?? 0) + 1);
          if (!matches(cell, got)) mismatches.push({ cell, got });
        }),
      );
    }
  };
  const started = Date.now();
  // Phase 1: everything that cannot destroy a shared caller's tenant or key.
  await run(
    cells.filter((c) => !c.destructive),
    64,
  );
  // Phase 2: destructive RPCs; refusals share callers, passes got fresh ones above.
  await run(
    cells.filter((c) => c.destructive),
    16,
  );
  // The shared home tenant is still there: no destructive call reached it.
  const still = await h.client(TenantService).getTenant({ tenantId: home.id }, h.as(h.ownerKey));
  expect(still.tenant?.id).toBe(home.id);

  if (mismatches.length > 0) {
    const rows = mismatches
      .map(
        ({ cell, got }) =>
          `${`${cell.service.name}/${cell.method.name}`.padEnd(48)} ${cell.principal.name.padEnd(20)} ${cell.protocol.padEnd(8)} expected ${show(cell.expected).padEnd(42)} got ${got.code} ${got.reason}`,
      )
      .sort();
    console.error(`authorization matrix: ${mismatches.length} mismatches of ${cells.length} cells\n${rows.join("\n")}`);
  }
  console.info(
    `authorization matrix: ${rpcCount} RPCs × ${principals.length} callers × ${PROTOCOLS.length} protocols = ${cells.length} cells, ${mismatches.length} mismatches, ${Date.now() - started} ms`,
  );
  console.info(`outcomes: ${[...tally].map(([k, n]) => `${k}=${n}`).join(" ")}`);
  expect(mismatches.length).toBe(0);
  // The matrix exercised every refusal it expects, and real successes too.
  for (const r of AUTH_REASONS) expect(tally.get(r) ?? 0, r).toBeGreaterThan(0);
  expect(tally.get("OK") ?? 0).toBeGreaterThan(0);
}, 120_000);

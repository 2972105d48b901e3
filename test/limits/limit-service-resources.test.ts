// LimitService resource quotas through a real server (Connect and gRPC): definitions with etags,
// plan tiers, usage per tenant and per end user, CheckResource / TrackResource /
// CheckAndTrackResource with BLOCK and WARN, request_id replays, calendar periods that roll over
// in the tenant's time zone, permissions and tenant isolation.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ResourceLimit_GateAction as Gate,
  ResourceLimit_Period as Period,
  ResourceLimit_Scope as Scope,
} from "../../gen/tenantd/v1/limit_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError } from "../helpers/app.js";
import { type LimitHarness, startLimitHarness } from "./limit-harness.js";

let lh: LimitHarness;
beforeAll(async () => {
  lh = await startLimitHarness();
});
afterAll(async () => {
  await lh?.close();
});

const opts = (key: string) => lh.h.as(key);

/** A tenant in a time zone, with a key holding every tenant permission, and its limits set. */
async function tenantWith(
  limits: Parameters<LimitHarness["limits"]["updateResourceLimits"]>[0]["limits"],
  timezone = "UTC",
) {
  const t = await lh.h.newTenant();
  if (timezone !== "UTC") {
    await lh.h.client(TenantService).updateCurrentTenant({ timezone }, opts(t.key));
  }
  if (limits && limits.length > 0) await lh.limits.updateResourceLimits({ limits }, opts(t.key));
  return t;
}

describe("GetResourceLimits / UpdateResourceLimits", () => {
  it("replaces the whole list, reports the plan's effective limit, and versions it with an etag", async () => {
    const t = await lh.h.newTenant();
    const empty = await lh.limits.getResourceLimits({}, opts(t.key));
    expect(empty.limits).toEqual([]);
    expect(empty.etag).toBe('W/"0"');
    expect(empty.plan).toBe(t.tenant.plan);

    const up = await lh.limits.updateResourceLimits(
      {
        limits: [
          {
            resource: "workflow",
            metric: "count",
            period: Period.DAY,
            limit: 100n,
            tiers: { [t.tenant.plan]: 10n, pro: 1000n },
          },
          {
            resource: "llm",
            metric: "tokens",
            period: Period.MONTH,
            limit: -1n,
            gateAction: Gate.WARN,
            scope: Scope.END_USER,
          },
        ],
        etag: empty.etag,
      },
      opts(t.key),
    );
    expect(up.etag).toBe('W/"1"');
    expect(up.limits.map((l) => [l.resource, l.effectiveLimit, l.gateAction, l.scope])).toEqual([
      ["workflow", 10n, Gate.BLOCK, Scope.TENANT],
      ["llm", -1n, Gate.WARN, Scope.END_USER],
    ]);
    const got = await lh.limits.getResourceLimits({}, opts(t.key));
    expect(got.etag).toBe(up.etag);
    expect(got.limits).toEqual(up.limits);

    // A stale etag is refused; the list is unchanged.
    await expectError(
      lh.limits.updateResourceLimits({ limits: [], etag: empty.etag }, opts(t.key)),
      Code.Aborted,
      "ETAG_MISMATCH",
    );
    await expectError(
      lh.limits.updateResourceLimits({ limits: [], etag: "garbage" }, opts(t.key)),
      Code.Aborted,
      "ETAG_MISMATCH",
    );
    expect((await lh.limits.getResourceLimits({}, opts(t.key))).limits).toHaveLength(2);
    // No etag: unconditional. Empty removes everything.
    const cleared = await lh.limits.updateResourceLimits({ limits: [] }, opts(t.key));
    expect(cleared).toMatchObject({ limits: [], etag: 'W/"2"' });
  });

  it("concurrent updates with the same etag: exactly one wins", async () => {
    const t = await lh.h.newTenant();
    const limits = [{ resource: "a", metric: "b", period: Period.DAY, limit: 1n }];
    const outs = await Promise.allSettled(
      Array.from({ length: 8 }, () => lh.limits.updateResourceLimits({ limits, etag: 'W/"0"' }, opts(t.key))),
    );
    expect(outs.filter((o) => o.status === "fulfilled")).toHaveLength(1);
  });

  it("refuses invalid limits with FIELD_INVALID", async () => {
    const t = await lh.h.newTenant();
    const bad = [
      { resource: "Bad", metric: "count", period: Period.DAY, limit: 1n },
      { resource: "a", metric: "count", period: Period.PERIOD_UNSPECIFIED, limit: 1n },
      { resource: "a", metric: "count", period: Period.DAY, limit: -2n },
    ];
    for (const l of bad) {
      await expectError(
        lh.limits.updateResourceLimits({ limits: [l] }, opts(t.key)),
        Code.InvalidArgument,
        "FIELD_INVALID",
      );
    }
    const dup = { resource: "a", metric: "count", period: Period.DAY, limit: 1n };
    await expectError(
      lh.limits.updateResourceLimits({ limits: [dup, { ...dup, limit: 2n }] }, opts(t.key)),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
    // Same resource and metric in two periods, or two scopes, is fine.
    await lh.limits.updateResourceLimits(
      { limits: [dup, { ...dup, period: Period.MONTH }, { ...dup, scope: Scope.END_USER }] },
      opts(t.key),
    );
  });

  it("needs limits:write to update and limits:read to read", async () => {
    const t = await lh.h.newTenant({ permissions: ["limits:read", "limits:check"] });
    await expectError(
      lh.limits.updateResourceLimits({ limits: [] }, opts(t.key)),
      Code.PermissionDenied,
      "PERMISSION_MISSING",
    );
    const c = await lh.h.newTenant({ permissions: ["limits:check"] });
    await expectError(lh.limits.getResourceLimits({}, opts(c.key)), Code.PermissionDenied, "PERMISSION_MISSING");
    await expectError(lh.limits.getResourceLimits({}, {}), Code.Unauthenticated, "KEY_MISSING");
  });

  it("an owner key acts on a tenant with x-tenant-id, and needs it", async () => {
    const t = await tenantWith([{ resource: "a", metric: "b", period: Period.DAY, limit: 5n }]);
    const got = await lh.limits.getResourceLimits({}, lh.h.as(lh.h.ownerKey, t.tenant.id));
    expect(got.limits).toHaveLength(1);
    await expectError(
      lh.limits.getResourceLimits({}, lh.h.as(lh.h.ownerKey)),
      Code.FailedPrecondition,
      "TENANT_CONTEXT_REQUIRED",
    );
  });
});

describe("CheckResource, TrackResource, CheckAndTrackResource", () => {
  it("BLOCK: check answers without counting; consume refuses the unit past the limit; track counts anyway", async () => {
    const t = await tenantWith([{ resource: "workflow", metric: "count", period: Period.DAY, limit: 3n }]);
    const q = { resource: "workflow", metric: "count" };
    const c0 = await lh.limits.checkResource({ ...q, amount: 3n }, opts(t.key));
    expect(c0).toMatchObject({
      allowed: true,
      current: 0n,
      limit: 3n,
      remaining: 3n,
      exceeded: false,
      gateAction: Gate.BLOCK,
    });
    expect((await lh.limits.checkResource({ ...q, amount: 4n }, opts(t.key))).allowed).toBe(false);

    for (let i = 1; i <= 3; i++) {
      const r = await lh.limits.checkAndTrackResource(q, opts(t.key));
      expect(r).toMatchObject({ allowed: true, current: BigInt(i), remaining: BigInt(3 - i) });
    }
    const refused = await lh.limits.checkAndTrackResource(q, opts(t.key));
    expect(refused).toMatchObject({ allowed: false, current: 3n, remaining: 0n, exceeded: true });

    const tracked = await lh.limits.trackResource({ ...q, amount: 2n }, opts(t.key));
    expect(tracked).toMatchObject({ allowed: false, current: 5n, remaining: 0n, exceeded: true });
    expect(tracked.usages[0]).toMatchObject({ current: 5n, percentage: (5 / 3) * 100 });
    expect((await lh.limits.checkResource({ ...q, amount: 0n }, opts(t.key))).allowed).toBe(false);
  });

  it("100 concurrent CheckAndTrackResource calls against a limit of 10: exactly 10 allowed", async () => {
    const t = await tenantWith([{ resource: "job", metric: "count", period: Period.MONTH, limit: 10n }]);
    const outs = await Promise.all(
      Array.from({ length: 100 }, () =>
        lh.limits.checkAndTrackResource({ resource: "job", metric: "count" }, opts(t.key)),
      ),
    );
    expect(outs.filter((o) => o.allowed)).toHaveLength(10);
    const usage = await lh.limits.getResourceUsage({}, opts(t.key));
    expect(usage.usages[0]).toMatchObject({ current: 10n, limit: 10n, remaining: 0n, percentage: 100 });
  });

  it("WARN allows past the limit and flags it", async () => {
    const t = await tenantWith([
      { resource: "llm", metric: "tokens", period: Period.DAY, limit: 100n, gateAction: Gate.WARN },
    ]);
    const r = await lh.limits.checkAndTrackResource({ resource: "llm", metric: "tokens", amount: 150n }, opts(t.key));
    expect(r).toMatchObject({
      allowed: true,
      exceeded: true,
      current: 150n,
      limit: 100n,
      remaining: 0n,
      gateAction: Gate.WARN,
    });
    expect(await lh.limits.checkResource({ resource: "llm", metric: "tokens" }, opts(t.key))).toMatchObject({
      allowed: true,
      exceeded: true,
    });
  });

  it("a resource without a limit is always allowed, and unlimited (-1) never refuses", async () => {
    const t = await tenantWith([{ resource: "free", metric: "count", period: Period.DAY, limit: -1n }]);
    expect(await lh.limits.checkResource({ resource: "nolimit", metric: "count" }, opts(t.key))).toMatchObject({
      allowed: true,
      limit: -1n,
      remaining: -1n,
      gateAction: Gate.GATE_ACTION_UNSPECIFIED,
      usages: [],
    });
    const r = await lh.limits.checkAndTrackResource(
      { resource: "free", metric: "count", amount: 10n ** 12n },
      opts(t.key),
    );
    expect(r).toMatchObject({ allowed: true, limit: -1n, remaining: -1n, exceeded: false });
  });

  it("END_USER limits count each user apart, and only when a user_id is given", async () => {
    const t = await tenantWith([
      { resource: "workflow", metric: "count", period: Period.DAY, limit: 2n, scope: Scope.END_USER },
      { resource: "workflow", metric: "count", period: Period.DAY, limit: 5n },
    ]);
    const q = { resource: "workflow", metric: "count" };
    for (let i = 0; i < 2; i++)
      expect((await lh.limits.checkAndTrackResource({ ...q, userId: "alice" }, opts(t.key))).allowed).toBe(true);
    const third = await lh.limits.checkAndTrackResource({ ...q, userId: "alice" }, opts(t.key));
    expect(third).toMatchObject({ allowed: false, limit: 2n, current: 2n });
    expect((await lh.limits.checkAndTrackResource({ ...q, userId: "bob" }, opts(t.key))).allowed).toBe(true);
    // Without a user only the tenant limit counts: 3 used of 5.
    const anon = await lh.limits.checkAndTrackResource(q, opts(t.key));
    expect(anon).toMatchObject({ allowed: true, current: 4n, limit: 5n });
    expect(anon.usages).toHaveLength(1);

    const aliceUsage = await lh.limits.getResourceUsage({ userId: "alice" }, opts(t.key));
    expect(aliceUsage.usages.map((u) => [u.scope, u.userId, u.current])).toEqual([
      [Scope.END_USER, "alice", 2n],
      [Scope.TENANT, "", 4n],
    ]);
    expect((await lh.limits.getResourceUsage({}, opts(t.key))).usages).toHaveLength(1);
  });

  it("plan tiers: the tenant's plan picks its tier; changing the plan changes the limit", async () => {
    const t = await tenantWith([
      { resource: "api", metric: "calls", period: Period.DAY, limit: 1n, tiers: { pro: 3n } },
    ]);
    expect(t.tenant.plan).not.toBe("pro");
    const q = { resource: "api", metric: "calls" };
    expect((await lh.limits.checkAndTrackResource(q, opts(t.key))).allowed).toBe(true);
    expect((await lh.limits.checkAndTrackResource(q, opts(t.key))).allowed).toBe(false);
    await lh.h.client(TenantService).updateTenant({ tenantId: t.tenant.id, plan: "pro" }, opts(lh.h.ownerKey));
    // Plans are cached for a second; move past it.
    lh.h.clock.advance(1500);
    const r = await lh.limits.checkAndTrackResource(q, opts(t.key));
    expect(r).toMatchObject({ allowed: true, limit: 3n, current: 2n });
    expect((await lh.limits.getResourceLimits({}, opts(t.key))).limits[0]?.effectiveLimit).toBe(3n);
  });

  it("request_id: a retried track counts once; another body with the same id is refused", async () => {
    const t = await tenantWith([{ resource: "llm", metric: "tokens", period: Period.DAY, limit: 1000n }]);
    const req = { resource: "llm", metric: "tokens", amount: 40n, requestId: "req-1" };
    const a = await lh.limits.trackResource(req, opts(t.key));
    const b = await lh.limits.trackResource(req, opts(t.key));
    expect([a.duplicate, b.duplicate, a.current, b.current]).toEqual([false, true, 40n, 40n]);
    await expectError(
      lh.limits.trackResource({ ...req, amount: 41n }, opts(t.key)),
      Code.FailedPrecondition,
      "REQUEST_ID_CONFLICT",
    );
    const c = await lh.limits.checkAndTrackResource({ ...req, requestId: "req-2" }, opts(t.key));
    const d = await lh.limits.checkAndTrackResource({ ...req, requestId: "req-2" }, opts(t.key));
    expect([c.duplicate, d.duplicate, d.current]).toEqual([false, true, 80n]);
    expect((await lh.limits.getResourceUsage({}, opts(t.key))).usages[0]?.current).toBe(80n);
  });

  it("counters start again with the next calendar day in the tenant's time zone", async () => {
    const t = await tenantWith([{ resource: "daily", metric: "count", period: Period.DAY, limit: 1n }], "Asia/Kolkata");
    const q = { resource: "daily", metric: "count" };
    expect((await lh.limits.checkAndTrackResource(q, opts(t.key))).allowed).toBe(true);
    const u = (await lh.limits.getResourceUsage({}, opts(t.key))).usages[0];
    const end = Number(u?.periodEndTime?.seconds) * 1000;
    // The day ends at local midnight: 18:30 UTC.
    expect(new Date(end).toISOString()).toMatch(/T18:30:00\.000Z$/);
    expect((await lh.limits.checkAndTrackResource(q, opts(t.key))).allowed).toBe(false);
    lh.h.clock.set(end);
    const next = await lh.limits.checkAndTrackResource(q, opts(t.key));
    expect(next).toMatchObject({ allowed: true, current: 1n });
  });

  it("works the same over gRPC", async () => {
    const t = await tenantWith([{ resource: "g", metric: "c", period: Period.HOUR, limit: 1n }]);
    expect((await lh.limitsGrpc.checkAndTrackResource({ resource: "g", metric: "c" }, opts(t.key))).allowed).toBe(true);
    expect((await lh.limitsGrpc.checkAndTrackResource({ resource: "g", metric: "c" }, opts(t.key))).allowed).toBe(
      false,
    );
    await expectError(
      lh.limitsGrpc.checkResource({ resource: "", metric: "c" }, opts(t.key)),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
  });

  it("a tenant never sees or spends another tenant's counters", async () => {
    const limits = [{ resource: "iso", metric: "count", period: Period.DAY, limit: 1n }];
    const a = await tenantWith(limits);
    const b = await tenantWith(limits);
    expect((await lh.limits.checkAndTrackResource({ resource: "iso", metric: "count" }, opts(a.key))).allowed).toBe(
      true,
    );
    expect((await lh.limits.checkAndTrackResource({ resource: "iso", metric: "count" }, opts(b.key))).allowed).toBe(
      true,
    );
    expect((await lh.limits.getResourceUsage({}, opts(b.key))).usages[0]?.current).toBe(1n);
    // Tenant a's key naming tenant b is refused (act-as is for owner keys only).
    await expectError(
      lh.limits.getResourceUsage({}, lh.h.as(a.key, b.tenant.id)),
      Code.PermissionDenied,
      "ACT_AS_FORBIDDEN",
    );
  });
});

// ReserveResource → CommitReservation / ReleaseReservation through a real server: holds count
// against BLOCK limits, commits replace them by the actual amount (idempotently), releases count
// nothing, and a hold expires by itself when the clock passes its TTL.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ResourceLimit_Period as Period, Reservation_State } from "../../gen/tenantd/v1/limit_pb.js";
import { expectError } from "../helpers/app.js";
import { type LimitHarness, startLimitHarness } from "./limit-harness.js";

let lh: LimitHarness;
beforeAll(async () => {
  lh = await startLimitHarness();
});
afterAll(async () => {
  await lh?.close();
});

async function tenant(limit = 100n) {
  const t = await lh.h.newTenant();
  await lh.limits.updateResourceLimits(
    { limits: [{ resource: "llm", metric: "tokens", period: Period.MONTH, limit }] },
    lh.h.as(t.key),
  );
  return { ...t, o: lh.h.as(t.key) };
}
const q = { resource: "llm", metric: "tokens" };

describe("ReserveResource", () => {
  it("holds the amount until commit, which counts the actual amount; a second commit answers the same", async () => {
    const t = await tenant();
    const r = await lh.limits.reserveResource({ ...q, amount: 60n }, t.o);
    expect(r).toMatchObject({ allowed: true, current: 60n, remaining: 40n, duplicate: false });
    expect(r.reservationId).toMatch(/^rsv_[0-9a-z]{26}$/);
    expect(Number(r.expireTime?.seconds) * 1000).toBe(Math.floor((lh.h.clock.now() + 5 * 60_000) / 1000) * 1000);
    expect((await lh.limits.getResourceUsage({}, t.o)).usages[0]).toMatchObject({ current: 60n, reserved: 60n });

    // The hold leaves 40: 50 more is refused and holds nothing.
    const refused = await lh.limits.reserveResource({ ...q, amount: 50n }, t.o);
    expect(refused).toMatchObject({ allowed: false, reservationId: "", current: 60n, exceeded: true });
    expect(refused.expireTime).toBeUndefined();
    expect((await lh.limits.checkAndTrackResource({ ...q, amount: 41n }, t.o)).allowed).toBe(false);

    const c = await lh.limits.commitReservation({ reservationId: r.reservationId, actualAmount: 35n }, t.o);
    expect(c.reservation).toMatchObject({ state: Reservation_State.COMMITTED, amount: 60n, committedAmount: 35n });
    expect(c.usages[0]).toMatchObject({ current: 35n, reserved: 0n });
    expect(c.exceeded).toBe(false);
    const again = await lh.limits.commitReservation({ reservationId: r.reservationId, actualAmount: 35n }, t.o);
    expect(again.reservation?.state).toBe(Reservation_State.COMMITTED);
    expect((await lh.limits.getResourceUsage({}, t.o)).usages[0]?.current).toBe(35n);
    await expectError(
      lh.limits.commitReservation({ reservationId: r.reservationId, actualAmount: 36n }, t.o),
      Code.FailedPrecondition,
      "STATE_CONFLICT",
    );
    await expectError(
      lh.limits.releaseReservation({ reservationId: r.reservationId }, t.o),
      Code.FailedPrecondition,
      "STATE_CONFLICT",
    );
  });

  it("commit without an amount counts the amount held; more than held counts in full", async () => {
    const t = await tenant();
    const a = await lh.limits.reserveResource({ ...q, amount: 30n }, t.o);
    expect(
      (await lh.limits.commitReservation({ reservationId: a.reservationId }, t.o)).reservation?.committedAmount,
    ).toBe(30n);
    const b = await lh.limits.reserveResource({ ...q, amount: 50n }, t.o);
    const c = await lh.limits.commitReservation({ reservationId: b.reservationId, actualAmount: 90n }, t.o);
    expect(c.exceeded).toBe(true);
    expect(c.usages[0]).toMatchObject({ current: 120n, remaining: 0n });
  });

  it("release removes the hold and counts nothing; releasing again answers the same", async () => {
    const t = await tenant();
    const r = await lh.limits.reserveResource({ ...q, amount: 100n }, t.o);
    const rel = await lh.limits.releaseReservation({ reservationId: r.reservationId }, t.o);
    expect(rel.reservation).toMatchObject({ state: Reservation_State.RELEASED, committedAmount: 0n });
    expect(rel.reservation?.finishTime).toBeDefined();
    expect((await lh.limits.releaseReservation({ reservationId: r.reservationId }, t.o)).reservation?.state).toBe(
      Reservation_State.RELEASED,
    );
    expect((await lh.limits.getResourceUsage({}, t.o)).usages[0]).toMatchObject({ current: 0n, reserved: 0n });
  });

  it("a hold expires by itself after its TTL", async () => {
    const t = await tenant();
    const r = await lh.limits.reserveResource({ ...q, amount: 100n, ttl: { seconds: 10n } }, t.o);
    expect((await lh.limits.checkResource(q, t.o)).allowed).toBe(false);
    lh.h.clock.advance(9_999);
    expect((await lh.limits.checkResource(q, t.o)).allowed).toBe(false);
    lh.h.clock.advance(1);
    expect(await lh.limits.checkResource(q, t.o)).toMatchObject({ allowed: true, current: 0n });
    await expectError(
      lh.limits.commitReservation({ reservationId: r.reservationId, actualAmount: 5n }, t.o),
      Code.FailedPrecondition,
      "STATE_CONFLICT",
    );
  });

  it("request_id returns the same reservation; unknown or foreign ids are not found", async () => {
    const t = await tenant();
    const a = await lh.limits.reserveResource({ ...q, amount: 10n, requestId: "r-1" }, t.o);
    const b = await lh.limits.reserveResource({ ...q, amount: 10n, requestId: "r-1" }, t.o);
    expect(b).toMatchObject({ reservationId: a.reservationId, duplicate: true });
    await expectError(
      lh.limits.reserveResource({ ...q, amount: 11n, requestId: "r-1" }, t.o),
      Code.FailedPrecondition,
      "REQUEST_ID_CONFLICT",
    );
    expect((await lh.limits.getResourceUsage({}, t.o)).usages[0]?.reserved).toBe(10n);

    const other = await tenant();
    await expectError(
      lh.limits.commitReservation({ reservationId: a.reservationId }, other.o),
      Code.NotFound,
      "RESOURCE_NOT_FOUND",
    );
    await expectError(
      lh.limits.releaseReservation({ reservationId: "rsv_nothing" }, t.o),
      Code.NotFound,
      "RESOURCE_NOT_FOUND",
    );
  });

  it("refuses a TTL outside 1 s to 1 h and an amount of 0", async () => {
    const t = await tenant();
    await expectError(
      lh.limits.reserveResource({ ...q, amount: 1n, ttl: { seconds: 3601n } }, t.o),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
    await expectError(lh.limits.reserveResource({ ...q, amount: 0n }, t.o), Code.InvalidArgument, "FIELD_INVALID");
  });
});

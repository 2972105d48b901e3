// Usage's calendar helpers: local days and months of a tenant's zone, across DST changes, odd
// offsets and year ends.
import { describe, expect, it } from "vitest";
import { localMs } from "../../src/services/limits/periods.js";
import {
  addDays,
  daysBetween,
  localDay,
  nextPeriod,
  periodBounds,
  periodDays,
  slotDay,
} from "../../src/services/usage/days.js";
import { SLOT_MS, slotOf } from "../../src/services/usage/meter.js";

describe("usage calendar", () => {
  it("localDay's per-zone cache answers as the formatter does, walking across DST days and back", () => {
    const zones = [
      "America/New_York",
      "Australia/Lord_Howe",
      "Asia/Kathmandu",
      "Pacific/Chatham",
      "Europe/London",
      "UTC",
    ];
    const uncached = (tz: string, t: number) => new Date(localMs(tz, t)).toISOString().slice(0, 10);
    let mismatches = 0;
    let checked = 0;
    for (const tz of zones) {
      // Forward through 2026 in 7-minute steps around the year's transitions, then random jumps.
      for (const start of [
        "2026-03-07T00:00:00Z",
        "2026-03-28T00:00:00Z",
        "2026-04-04T00:00:00Z",
        "2026-10-24T00:00:00Z",
      ]) {
        for (let t = Date.parse(start); t < Date.parse(start) + 3 * 86_400_000; t += 7 * 60_000) {
          checked++;
          if (localDay(tz, t) !== uncached(tz, t)) mismatches++;
        }
      }
      for (let i = 0; i < 500; i++) {
        const t = Date.parse("2020-01-01T00:00:00Z") + Math.floor(Math.random() * 10 * 365 * 86_400_000);
        checked++;
        if (localDay(tz, t) !== uncached(tz, t)) mismatches++;
      }
    }
    expect(checked).toBeGreaterThan(10_000);
    expect(mismatches).toBe(0);
  });

  it("gives the local month's bounds, DST included (New York, Sydney, Kathmandu)", () => {
    expect(periodBounds("America/New_York", "2026-03")).toEqual({
      startMs: Date.parse("2026-03-01T05:00:00Z"),
      endMs: Date.parse("2026-04-01T04:00:00Z"),
    });
    expect(periodBounds("Australia/Sydney", "2026-04")).toEqual({
      startMs: Date.parse("2026-03-31T13:00:00Z"),
      endMs: Date.parse("2026-04-30T14:00:00Z"),
    });
    expect(periodBounds("Asia/Kathmandu", "2026-12")).toEqual({
      startMs: Date.parse("2026-11-30T18:15:00Z"),
      endMs: Date.parse("2026-12-31T18:15:00Z"),
    });
  });

  it("puts instants around local midnight on the right local day and month", () => {
    expect(localDay("Pacific/Kiritimati", Date.parse("2026-12-31T09:59:59Z"))).toBe("2026-12-31");
    expect(localDay("Pacific/Kiritimati", Date.parse("2026-12-31T10:00:00Z"))).toBe("2027-01-01");
    expect(localDay("America/Los_Angeles", Date.parse("2026-11-01T07:59:59Z"))).toBe("2026-11-01");
    expect(localDay("America/Los_Angeles", Date.parse("2026-11-01T06:59:59Z"))).toBe("2026-10-31");
    // Every slot lies inside one local day: its first and last instants agree.
    for (const zone of ["Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kolkata"]) {
      for (let t = Date.parse("2026-03-01T00:00:00Z"); t < Date.parse("2026-05-01T00:00:00Z"); t += SLOT_MS) {
        const s = slotOf(t);
        expect(slotDay(zone, s)).toBe(localDay(zone, (s + 1) * SLOT_MS - 1));
      }
    }
  });

  it("does day and month arithmetic on strings", () => {
    expect(addDays("2026-12-31", 1)).toBe("2027-01-01");
    expect(addDays("2028-03-01", -1)).toBe("2028-02-29");
    expect(daysBetween("2026-01-01", "2027-01-01")).toBe(365);
    expect(nextPeriod("2026-12")).toBe("2027-01");
    expect(periodDays("2026-02")).toEqual({ from: "2026-02-01", to: "2026-03-01" });
  });
});

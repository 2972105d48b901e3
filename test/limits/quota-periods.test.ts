// Counting periods in tenants' time zones: exact windows around month ends and daylight-saving
// changes in several zones (including Lord Howe's 30-minute shift and India's half-hour offset),
// and properties over random instants: every window holds its instant, has one wall-clock label
// throughout, differs in label from its neighbours, and windows tile time without gaps or
// overlaps.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { computePeriodWindow, type PeriodUnit, periodLabel, periodWindow } from "../../src/services/limits/periods.js";

const H = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString();
const win = (unit: PeriodUnit, tz: string, at: string) => {
  const w = computePeriodWindow(unit, tz, Date.parse(at));
  return { start: iso(w.startMs), end: iso(w.endMs), hours: (w.endMs - w.startMs) / H };
};

describe("day windows", () => {
  it.each([
    // Spring forward: the local day has 23 hours.
    ["Europe/Paris", "2026-03-29T12:00:00Z", "2026-03-28T23:00:00.000Z", "2026-03-29T22:00:00.000Z", 23],
    // Fall back: 25 hours.
    ["Europe/Paris", "2026-10-25T12:00:00Z", "2026-10-24T22:00:00.000Z", "2026-10-25T23:00:00.000Z", 25],
    ["America/New_York", "2026-03-08T15:00:00Z", "2026-03-08T05:00:00.000Z", "2026-03-09T04:00:00.000Z", 23],
    ["America/New_York", "2026-11-01T15:00:00Z", "2026-11-01T04:00:00.000Z", "2026-11-02T05:00:00.000Z", 25],
    // No daylight saving, and a half-hour offset: midnight is 18:30 UTC the day before.
    ["Asia/Kolkata", "2026-03-29T12:00:00Z", "2026-03-28T18:30:00.000Z", "2026-03-29T18:30:00.000Z", 24],
    // Lord Howe moves its clocks by 30 minutes: days of 23.5 and 24.5 hours.
    ["Australia/Lord_Howe", "2026-10-04T06:00:00Z", "2026-10-03T13:30:00.000Z", "2026-10-04T13:00:00.000Z", 23.5],
    ["Australia/Lord_Howe", "2026-04-05T06:00:00Z", "2026-04-04T13:00:00.000Z", "2026-04-05T13:30:00.000Z", 24.5],
    ["UTC", "2026-03-29T12:00:00Z", "2026-03-29T00:00:00.000Z", "2026-03-30T00:00:00.000Z", 24],
    // Santiago springs forward at midnight: that day starts at 01:00 local, at the transition.
    ["America/Santiago", "2026-09-06T12:00:00Z", "2026-09-06T04:00:00.000Z", "2026-09-07T03:00:00.000Z", 23],
  ])("%s on %s", (tz, at, start, end, hours) => {
    expect(win("day", tz, at)).toEqual({ start, end, hours });
  });

  it("the instant of local midnight starts the day, the instant before ends the previous one", () => {
    const midnight = Date.parse("2026-03-29T22:00:00Z"); // 2026-03-30 00:00 in Paris (CEST)
    expect(computePeriodWindow("day", "Europe/Paris", midnight).startMs).toBe(midnight);
    expect(computePeriodWindow("day", "Europe/Paris", midnight - 1).endMs).toBe(midnight);
  });
});

describe("month windows", () => {
  it.each([
    // February, a leap year, in UTC.
    ["UTC", "2028-02-15T00:00:00Z", "2028-02-01T00:00:00.000Z", "2028-03-01T00:00:00.000Z", 29 * 24],
    ["UTC", "2026-02-15T00:00:00Z", "2026-02-01T00:00:00.000Z", "2026-03-01T00:00:00.000Z", 28 * 24],
    // March in Paris loses an hour to daylight saving; October gains one.
    ["Europe/Paris", "2026-03-15T00:00:00Z", "2026-02-28T23:00:00.000Z", "2026-03-31T22:00:00.000Z", 31 * 24 - 1],
    ["Europe/Paris", "2026-10-15T00:00:00Z", "2026-09-30T22:00:00.000Z", "2026-10-31T23:00:00.000Z", 31 * 24 + 1],
    ["America/New_York", "2026-11-20T00:00:00Z", "2026-11-01T04:00:00.000Z", "2026-12-01T05:00:00.000Z", 30 * 24 + 1],
    ["Asia/Kolkata", "2026-12-31T20:00:00Z", "2026-12-31T18:30:00.000Z", "2027-01-31T18:30:00.000Z", 31 * 24],
    [
      "Australia/Lord_Howe",
      "2026-04-10T00:00:00Z",
      "2026-03-31T13:00:00.000Z",
      "2026-04-30T13:30:00.000Z",
      30 * 24 + 0.5,
    ],
  ])("%s around %s", (tz, at, start, end, hours) => {
    expect(win("month", tz, at)).toEqual({ start, end, hours });
  });

  it("New Year's Eve in UTC is already January in Kolkata", () => {
    const at = Date.parse("2026-12-31T19:00:00Z");
    expect(iso(computePeriodWindow("month", "Asia/Kolkata", at).startMs)).toBe("2026-12-31T18:30:00.000Z");
    expect(iso(computePeriodWindow("month", "UTC", at).startMs)).toBe("2026-12-01T00:00:00.000Z");
  });
});

describe("hour and minute windows", () => {
  it("a repeated wall-clock hour lasts two hours, like the 25-hour day (Paris, fall back)", () => {
    expect(win("hour", "Europe/Paris", "2026-10-25T00:30:00Z")).toEqual({
      start: "2026-10-25T00:00:00.000Z",
      end: "2026-10-25T02:00:00.000Z",
      hours: 2,
    });
  });
  it("a skipped hour does not exist (Paris, spring forward: 01:59 CET → 03:00 CEST)", () => {
    expect(win("hour", "Europe/Paris", "2026-03-29T01:30:00Z")).toEqual({
      start: "2026-03-29T01:00:00.000Z",
      end: "2026-03-29T02:00:00.000Z",
      hours: 1,
    });
    expect(win("hour", "Europe/Paris", "2026-03-29T00:59:00Z").end).toBe("2026-03-29T01:00:00.000Z");
  });
  it("Lord Howe's 30-minute shifts make hours of 90 and 30 minutes", () => {
    expect(win("hour", "Australia/Lord_Howe", "2026-04-04T15:10:00Z").hours).toBe(1.5);
    // Spring forward at 02:00 → 02:30: the hour labelled 02 runs from 02:30 to 03:00.
    expect(win("hour", "Australia/Lord_Howe", "2026-10-03T15:40:00Z")).toEqual({
      start: "2026-10-03T15:30:00.000Z",
      end: "2026-10-03T16:00:00.000Z",
      hours: 0.5,
    });
  });
  it("hours in Kolkata start at half past the UTC hour", () => {
    expect(win("hour", "Asia/Kolkata", "2026-06-01T10:00:00Z")).toEqual({
      start: "2026-06-01T09:30:00.000Z",
      end: "2026-06-01T10:30:00.000Z",
      hours: 1,
    });
  });
  it("minutes are whole minutes, also across a fall-back", () => {
    for (const at of ["2026-10-25T00:59:30Z", "2026-10-25T01:00:00Z", "2026-06-01T10:00:59.999Z"]) {
      const w = computePeriodWindow("minute", "Europe/Paris", Date.parse(at));
      expect(w.endMs - w.startMs).toBe(60_000);
      expect(w.startMs % 60_000).toBe(0);
    }
  });
});

const ZONES = [
  "UTC",
  "Europe/Paris",
  "America/New_York",
  "Asia/Kolkata",
  "Australia/Lord_Howe",
  "America/Santiago",
  "Asia/Kathmandu",
  "Pacific/Chatham",
];
const UNITS: PeriodUnit[] = ["minute", "hour", "day", "month"];

describe("properties over random instants (2020–2035)", () => {
  it("each window contains its instant, keeps one label, and borders windows of other labels", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ZONES),
        fc.constantFrom(...UNITS),
        fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2035, 0, 1) }),
        (tz, unit, at) => {
          const w = computePeriodWindow(unit, tz, at);
          expect(w.startMs).toBeLessThanOrEqual(at);
          expect(w.endMs).toBeGreaterThan(at);
          const label = periodLabel(unit, tz, at);
          expect(periodLabel(unit, tz, w.startMs)).toBe(label);
          expect(periodLabel(unit, tz, w.endMs - 1)).toBe(label);
          expect(periodLabel(unit, tz, w.startMs - 1)).not.toBe(label);
          expect(periodLabel(unit, tz, w.endMs)).not.toBe(label);
          // Sampled inside: the label holds throughout (a window never spans a label change).
          for (let i = 1; i < 8; i++) {
            expect(periodLabel(unit, tz, w.startMs + Math.floor(((w.endMs - w.startMs) * i) / 8))).toBe(label);
          }
          // Tiling: the windows of the boundaries are the neighbours.
          expect(computePeriodWindow(unit, tz, w.endMs).startMs).toBe(w.endMs);
          expect(computePeriodWindow(unit, tz, w.startMs - 1).endMs).toBe(w.startMs);
        },
      ),
      { numRuns: 400 },
    );
  });

  it("walking day by day through a year in every zone covers it exactly (365 or 366 days)", () => {
    for (const tz of ZONES) {
      let t = computePeriodWindow("day", tz, Date.UTC(2026, 5, 1)).startMs;
      let days = 0;
      const until = t + 365 * 24 * H;
      const lengths = new Set<number>();
      while (t < until) {
        const w = computePeriodWindow("day", tz, t);
        expect(w.startMs).toBe(t);
        lengths.add((w.endMs - w.startMs) / H);
        t = w.endMs;
        days++;
      }
      expect(t).toBe(until);
      expect(days).toBe(365);
      for (const l of lengths) expect([23, 23.5, 24, 24.5, 25]).toContain(l);
    }
  });

  it("the cached lookup answers what the computation does", () => {
    const base = Date.parse("2026-10-24T20:00:00Z");
    for (let i = 0; i < 200; i++) {
      const at = base + i * 7 * 60_000;
      for (const unit of UNITS) {
        expect(periodWindow(unit, "Europe/Paris", at)).toEqual(computePeriodWindow(unit, "Europe/Paris", at));
      }
    }
  });
});

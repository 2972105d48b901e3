// The usage anomaly detector: the contract's figures on a hand-computed example, each guard, and
// long simulated runs (two years of days per series, every day assessed against its previous 28)
// that must stay silent on ordinary traffic and catch injected spikes. Every run is seeded, so the
// printed figures are the same on every machine; docs/usage-anomalies.md quotes them.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type AnomalyThresholds, assessDay, DEFAULT_ANOMALY_THRESHOLDS } from "../../src/services/usage/anomaly.js";

const WINDOW = DEFAULT_ANOMALY_THRESHOLDS.windowDays;
const DAYS = 730;

/** mulberry32: a small seeded generator, uniform in [0, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** A Poisson draw: Knuth's method for small means, the normal approximation above 50. */
function poisson(r: () => number, mean: number): number {
  if (mean <= 0) return 0;
  if (mean > 50) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(r)));
  const limit = Math.exp(-mean);
  let k = 0;
  for (let p = r(); p > limit; p *= r()) k++;
  return k;
}

/** A day's count: Poisson around `mean` times a day-level log-normal factor of spread `cv`. */
function day(r: () => number, mean: number, cv = 0): number {
  return poisson(r, cv > 0 ? mean * Math.exp(cv * gaussian(r) - (cv * cv) / 2) : mean);
}

const START = Date.UTC(2024, 0, 1); // a Monday
function dateOf(i: number): Date {
  return new Date(START + i * 86_400_000);
}
function isWeekend(i: number): boolean {
  const d = dateOf(i).getUTCDay();
  return d === 0 || d === 6;
}
function isMonthEnd(i: number): boolean {
  return dateOf(i + 1).getUTCDate() === 1;
}

type Series = (seed: number) => number[];
function series(fn: (r: () => number, i: number) => number): Series {
  return (seed) => {
    const r = rng(seed);
    return Array.from({ length: DAYS }, (_, i) => fn(r, i));
  };
}

/** The quiet series: none of their days may alert. */
const QUIET: Record<string, Series> = {
  "steady, 20/day": series((r) => day(r, 20)),
  "steady, 300/day": series((r) => day(r, 300)),
  "steady, 1000/day": series((r) => day(r, 1000)),
  "steady, 100k/day": series((r) => day(r, 100_000)),
  "noisy (25 % day-to-day), 1000/day": series((r) => day(r, 1000, 0.25)),
  "noisy (25 % day-to-day), 150/day": series((r) => day(r, 150, 0.25)),
  "weekly, weekdays 1000 / weekends 200": series((r, i) => day(r, isWeekend(i) ? 200 : 1000, 0.1)),
  "weekly, weekdays 1000 / weekends 5000": series((r, i) => day(r, isWeekend(i) ? 5000 : 1000, 0.1)),
  "growth +1 %/day from 100": series((r, i) => day(r, 100 * 1.01 ** i, 0.1)),
  "growth +5 %/day for 90 days from 100": series((r, i) => day(r, 100 * 1.05 ** Math.min(i, 90), 0.1)),
  "month-end bump ×2, 1000/day": series((r, i) => day(r, isMonthEnd(i) ? 2000 : 1000, 0.1)),
  "weekly + month-end ×2 + growth +0.2 %/day": series((r, i) =>
    day(r, (isWeekend(i) ? 200 : 1000) * (isMonthEnd(i) ? 2 : 1) * 1.002 ** i, 0.1),
  ),
  "intermittent batch job (30 % of days, 5000)": series((r) => (r() < 0.3 ? day(r, 5000, 0.2) : 0)),
};
const SEEDS = Array.from({ length: 20 }, (_, i) => i + 1);

/** Days assessed and alerts raised over a series, each day against its previous `WINDOW` days. */
function run(values: readonly number[], t?: AnomalyThresholds): { days: number; alerts: number[] } {
  const first = values.findIndex((v) => v > 0); // the history starts at the first day with usage
  const alerts: number[] = [];
  let days = 0;
  for (let i = first + 1; i < values.length; i++) {
    days++;
    if (assessDay(values.slice(Math.max(first, i - WINDOW), i), values[i]!, t).anomalous) alerts.push(i);
  }
  return { days, alerts };
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

describe("assessDay: the contract's figures", () => {
  it("computes the baseline (median) and the score (MAD · 1.4826) of a hand-computed example", () => {
    // sorted: 700 800 900 1000 1000 1100 1200 1300 → median 1000
    // |deviations| sorted: 0 0 100 100 200 200 300 300 → MAD 150 → sigma 1.4826 · 150 = 222.39
    const history = [800, 1200, 1000, 900, 1300, 1100, 700, 1000];
    const spike = assessDay(history, 5000);
    expect(spike.baseline).toBe(1000);
    expect(spike.score).toBeCloseTo(4000 / 222.39, 10); // 17.99
    expect(spike).toMatchObject({ anomalous: true, reason: "score 18.0 ≥ 4" });

    const high = assessDay(history, 1800); // (1800 − 1000) / 222.39 = 3.6
    expect(high.score).toBeCloseTo(800 / 222.39, 10);
    expect(high).toMatchObject({ anomalous: false, reason: "score 3.6 < 4" });
  });

  it("floors the robust sigma where the MAD is 0: a weekday of 1001 after twenty of 1000 is not an alert", () => {
    const weekly = Array.from({ length: 28 }, (_, i) => (i % 7 >= 5 ? 200 : 1000)); // MAD 0
    const v = assessDay(weekly, 1001);
    expect(v.baseline).toBe(1000);
    expect(v.score).toBeCloseTo(1 / 100, 10); // sigma = 10 % of the baseline
    expect(v.anomalous).toBe(false);
    // the floor is √baseline for small counts, and 1 at the bottom
    expect(assessDay(Array(28).fill(25), 30).score).toBeCloseTo(5 / 5, 10);
    expect(assessDay(Array(28).fill(0), 3).score).toBe(3);
  });

  it("uses the last windowDays of a longer history, and a signed score", () => {
    const v = assessDay([...Array(10).fill(1_000_000), ...Array(28).fill(1000)], 500);
    expect(v.baseline).toBe(1000);
    expect(v.score).toBe(-5);
    expect(v).toMatchObject({ anomalous: false, reason: "not above the baseline 1000" });
  });

  it("refuses negative or non-finite quantities and unusable thresholds", () => {
    expect(() => assessDay([1, -1], 3)).toThrow(RangeError);
    expect(() => assessDay([1, 2], Number.NaN)).toThrow(RangeError);
    expect(() => assessDay([1], 2, { ...DEFAULT_ANOMALY_THRESHOLDS, minRatio: 0.5 })).toThrow(RangeError);
    expect(() => assessDay([1], 2, { ...DEFAULT_ANOMALY_THRESHOLDS, minHistoryDays: 40 })).toThrow(RangeError);
  });
});

describe("assessDay: the guards", () => {
  const steady = Array(28).fill(1000);

  it("stays silent with too little history, and starts at minHistoryDays", () => {
    expect(assessDay([], 1e9)).toMatchObject({
      anomalous: false,
      baseline: 0,
      reason: "too little history (0 of 7 days)",
    });
    expect(assessDay([1000, 1000, 1000], 50_000)).toMatchObject({
      anomalous: false,
      baseline: 1000,
      reason: "too little history (3 of 7 days)",
    });
    expect(assessDay(Array(6).fill(1000), 50_000).anomalous).toBe(false);
    expect(assessDay(Array(7).fill(1000), 50_000).anomalous).toBe(true);
    const lenient = { ...DEFAULT_ANOMALY_THRESHOLDS, minHistoryDays: 3 };
    expect(assessDay([1000, 1000, 1000], 50_000, lenient).anomalous).toBe(true);
  });

  it("needs a minimum observed quantity", () => {
    expect(assessDay(Array(28).fill(2), 60)).toMatchObject({ anomalous: false, reason: "observed 60 < minimum 100" });
    expect(assessDay(Array(28).fill(2), 100).anomalous).toBe(true);
  });

  it("needs a minimum ratio over the baseline, however unlikely the day", () => {
    const v = assessDay(steady, 2900); // score 19 but only 2.9×
    expect(v.score).toBe(19);
    expect(v).toMatchObject({ anomalous: false, reason: "2.9× the baseline < 3×" });
    expect(assessDay(steady, 3000).anomalous).toBe(true);
  });

  it("never alerts on a weekly peak, measured against the same weekday", () => {
    // weekends of 5000 in a window of weekdays of 1000: the baseline is 1000, a Saturday is 5×
    const weekendPeaked = Array.from({ length: 28 }, (_, i) => (i % 7 >= 5 ? 5000 : 1000));
    const saturday = assessDay(weekendPeaked.slice(0, 26), 6000); // day 26 and days 19, 12, 5: Saturdays
    expect(saturday.baseline).toBe(1000);
    expect(saturday).toMatchObject({
      anomalous: false,
      reason: "weekly pattern: 1.2× the same weekday's median 5000",
    });
    expect(assessDay(weekendPeaked.slice(0, 26), 15_000).anomalous).toBe(true);
    expect(assessDay(weekendPeaked, 10_000).anomalous).toBe(true); // a Monday at 10× is still caught
  });

  it("treats a level already reached in the window as known (intermittent use, a sustained jump)", () => {
    const batch = [0, 0, 4000, 0, 0, 0, 5000, 0, 0, 0, 0, 4500, 0, 0]; // median 0
    expect(assessDay(batch, 5200)).toMatchObject({ anomalous: false, reason: "below 2× the window's peak 5000" });
    expect(assessDay(batch, 10_000).anomalous).toBe(true);

    // a leaked key at 10×: alerts on its first day, not on the next at the same level, again if it doubles
    expect(assessDay(steady, 10_000).anomalous).toBe(true);
    const afterOne = [...steady.slice(1), 10_000];
    expect(assessDay(afterOne, 10_000).anomalous).toBe(false);
    expect(assessDay(afterOne, 20_000).anomalous).toBe(true);
  });

  it("alerts when a dormant tenant suddenly uses a key again", () => {
    expect(assessDay(Array(28).fill(0), 500)).toMatchObject({ anomalous: true, baseline: 0, score: 500 });
  });

  it("never alerts on a partial day below the usual level, and an alert on a partial day is final", () => {
    const weekly = Array.from({ length: 28 }, (_, i) => (i % 7 >= 5 ? 200 : 1000));
    for (let sofar = 0; sofar <= 1000; sofar += 10) expect(assessDay(weekly, sofar).anomalous).toBe(false);
    // the verdict is non-decreasing in the observed quantity, for any history and thresholds
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.nat(50), fc.nat(1_000_000)), { maxLength: 40 }),
        fc.nat(5_000_000),
        fc.nat(5_000_000),
        fc.record({
          windowDays: fc.integer({ min: 7, max: 40 }),
          minScore: fc.double({ min: 0, max: 10, noNaN: true }),
          minObserved: fc.nat(1000),
          minRatio: fc.double({ min: 1, max: 10, noNaN: true }),
          minHistoryDays: fc.integer({ min: 0, max: 7 }),
        }),
        (history, a, b, t) => {
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          if (assessDay(history, lo, t).anomalous) expect(assessDay(history, hi, t).anomalous).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("assessDay: long simulated runs", () => {
  it(`raises no alert over ${DAYS} days × ${SEEDS.length} seeds of each quiet series`, () => {
    const rows: Array<{ series: string; days: number; falsePositives: number }> = [];
    for (const [name, make] of Object.entries(QUIET)) {
      let days = 0;
      let falsePositives = 0;
      for (const seed of SEEDS) {
        const r = run(make(seed));
        days += r.days;
        falsePositives += r.alerts.length;
      }
      rows.push({ series: name, days, falsePositives });
    }
    console.log("False positives (each day against its previous 28):");
    console.table(rows);
    const total = rows.reduce((s, r) => s + r.days, 0);
    console.log(`total: ${rows.reduce((s, r) => s + r.falsePositives, 0)} false positives over ${total} days`);
    for (const r of rows) expect(r, r.series).toMatchObject({ falsePositives: 0 });
  });

  it("detects every spike of 10× and 50× the baseline in steady, noisy and weekly series", () => {
    const SPIKED: Record<string, Series> = {
      "steady, 20/day": QUIET["steady, 20/day"]!,
      "steady, 1000/day": QUIET["steady, 1000/day"]!,
      "noisy (25 %), 1000/day": QUIET["noisy (25 % day-to-day), 1000/day"]!,
      "noisy (25 %), 150/day": QUIET["noisy (25 % day-to-day), 150/day"]!,
      "weekly 1000 / 200": QUIET["weekly, weekdays 1000 / weekends 200"]!,
      "weekly 1000 / 5000": QUIET["weekly, weekdays 1000 / weekends 5000"]!,
      "month-end ×2": QUIET["month-end bump ×2, 1000/day"]!,
    };
    const factors = [3, 5, 10, 20, 50];
    const rows: Array<Record<string, string | number>> = [];
    const rates = new Map<string, number>();
    for (const [name, make] of Object.entries(SPIKED)) {
      const row: Record<string, string | number> = { series: name };
      for (const k of factors) {
        let spikes = 0;
        let caught = 0;
        for (const seed of SEEDS.slice(0, 5)) {
          const values = make(seed);
          // every day with a full window becomes, in turn, a spike of k × the baseline
          for (let i = WINDOW; i < values.length; i++) {
            const history = values.slice(i - WINDOW, i);
            spikes++;
            if (assessDay(history, k * median(history)).anomalous) caught++;
          }
        }
        rates.set(`${name} ${k}`, caught / spikes);
        row[`${k}×`] = `${((100 * caught) / spikes).toFixed(1)} % of ${spikes}`;
      }
      rows.push(row);
    }
    console.log("Detection rate of a spike of k × the baseline (28-day median):");
    console.table(rows);
    for (const name of Object.keys(SPIKED)) {
      if (name === "weekly 1000 / 5000") continue; // a weekend there is 5× the baseline already
      expect(rates.get(`${name} 10`), name).toBe(1);
      expect(rates.get(`${name} 50`), name).toBe(1);
    }
    // on weekend-peaked traffic, 10× the (weekday) baseline is only 2× a weekend, the window's
    // busiest days: a spike must double those too
    expect(rates.get("weekly 1000 / 5000 20")).toBe(1);
    expect(rates.get("weekly 1000 / 5000 50")).toBe(1);
  });

  it("detects a leak added on top of ordinary traffic, even while the day is in progress", () => {
    // steady 1000/day; from some day on a leaked key adds 20000/day, spread over the day: the
    // alert comes on the first day, at the first hour the running total clears every gate
    const values = QUIET["steady, 1000/day"]!(7);
    const history = values.slice(100 - WINDOW, 100);
    let firstHour = -1;
    for (let hour = 1; hour <= 24 && firstHour < 0; hour++) {
      const sofar = Math.round(((values[100]! + 20_000) * hour) / 24);
      if (assessDay(history, sofar).anomalous) firstHour = hour;
    }
    console.log(`a 20000/day leak over 1000/day traffic alerts after ${firstHour} h of the day`);
    expect(firstHour).toBeGreaterThan(0);
    expect(firstHour).toBeLessThanOrEqual(4);
  });
});

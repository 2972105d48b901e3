// Calendar-correct counting periods (minute, hour, day, month) in a tenant's IANA time zone.
//
// Definition: a period is the maximal stretch of time over which the wall clock of the zone,
// truncated to the period's unit, shows the same value (its "label"). So a DAY runs from one
// local midnight to the next: 23 hours when the clocks spring forward, 25 when they fall back,
// and a day whose midnight does not exist (zones that change at 00:00) starts at the transition.
// An HOUR whose wall-clock hour repeats (fall back by one hour) lasts two hours, like the 25-hour
// day; one that is skipped never exists. Periods partition time: each instant is in exactly one,
// and the end of one is the start of the next, so counters keyed by the period start never
// overlap.
//
// Method: Intl gives the wall-clock fields of an instant (no tz database of our own). With the
// offset that holds at the instant, the start and end candidates are the truncated local time
// (and the next one) minus that offset. When the offset at a candidate differs, a transition lies
// between; it is found by bisection and the label on each side of it decides whether the period
// ends there or runs on with the other offset. Two transitions inside one period that cancel each
// other out (Morocco's Ramadan suspension inside one month) keep the endpoints right, since only
// the offsets at the endpoints matter then.
//
// Everything here is pure, apart from a small cache of formatters and of the last window per
// (zone, period): on the hot path most calls fall inside the cached window and cost no Intl call.

export type PeriodUnit = "minute" | "hour" | "day" | "month";

export interface PeriodWindow {
  /** First instant of the period (epoch ms, inclusive). */
  startMs: number;
  /** First instant of the next period (epoch ms, exclusive). */
  endMs: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall-clock time of an instant, expressed as if it were UTC (epoch ms of the local fields). */
export function localMs(timeZone: string, atMs: number): number {
  const fields: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(atMs)) {
    if (p.type !== "literal") fields[p.type] = Number(p.value);
  }
  const { year = 1970, month = 1, day = 1, hour = 0, minute = 0, second = 0 } = fields;
  // Intl rounds down to the second; keep the milliseconds of the instant (every real offset is a
  // whole number of seconds).
  const ms = ((atMs % 1000) + 1000) % 1000;
  return Date.UTC(year, month - 1, day, hour, minute, second) + ms;
}

/** Offset of the zone at an instant: wall clock minus UTC, in ms. */
export function offsetMs(timeZone: string, atMs: number): number {
  return localMs(timeZone, atMs) - atMs;
}

/** Start of the unit containing a wall-clock time (both as local epoch ms). */
function truncLocal(unit: PeriodUnit, local: number): number {
  const d = new Date(local);
  const y = d.getUTCFullYear();
  const mo = d.getUTCMonth();
  switch (unit) {
    case "minute":
      return Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes());
    case "hour":
      return Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours());
    case "day":
      return Date.UTC(y, mo, d.getUTCDate());
    case "month":
      return Date.UTC(y, mo, 1);
  }
}

/** Start of the next unit after the one containing a wall-clock time. */
function nextLocal(unit: PeriodUnit, local: number): number {
  const d = new Date(truncLocal(unit, local));
  const y = d.getUTCFullYear();
  const mo = d.getUTCMonth();
  switch (unit) {
    case "minute":
      return Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes() + 1);
    case "hour":
      return Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours() + 1);
    case "day":
      return Date.UTC(y, mo, d.getUTCDate() + 1);
    case "month":
      return Date.UTC(y, mo + 1, 1);
  }
}

/** The label of an instant: its wall-clock time truncated to the unit. */
export function periodLabel(unit: PeriodUnit, timeZone: string, atMs: number): number {
  return truncLocal(unit, localMs(timeZone, atMs));
}

/**
 * The first instant in (lo, hi] whose offset equals the offset at `hi`, given that the offset at
 * `lo` differs: the transition into `hi`'s offset (the last one, when there are several).
 */
function transitionBefore(timeZone: string, lo: number, hi: number): number {
  const target = offsetMs(timeZone, hi);
  let a = lo; // offset here differs from target
  let b = hi; // offset here is target
  while (b - a > 1) {
    const mid = a + Math.floor((b - a) / 2);
    if (offsetMs(timeZone, mid) === target) b = mid;
    else a = mid;
  }
  return b;
}

/** The first instant in (lo, hi] whose offset differs from the offset at `lo`. */
function transitionAfter(timeZone: string, lo: number, hi: number): number {
  const source = offsetMs(timeZone, lo);
  let a = lo; // offset here is source
  let b = hi; // offset here differs
  while (b - a > 1) {
    const mid = a + Math.floor((b - a) / 2);
    if (offsetMs(timeZone, mid) === source) a = mid;
    else b = mid;
  }
  return b;
}

// A period spans at most two transitions' worth of hops in practice; the bound only guards
// against a malformed zone looping forever.
const MAX_HOPS = 16;

function computeStart(unit: PeriodUnit, timeZone: string, atMs: number, label: number): number {
  let hi = atMs;
  for (let i = 0; i < MAX_HOPS; i++) {
    const o = offsetMs(timeZone, hi);
    const cand = truncLocal(unit, hi + o) - o;
    if (offsetMs(timeZone, cand) !== o) {
      // The offset changed between the candidate and `hi`: the period either starts at that
      // transition (the label changed there) or runs on before it under the earlier offset.
      const t = transitionBefore(timeZone, cand, hi);
      if (periodLabel(unit, timeZone, t - 1) !== label) return t;
      hi = t - 1;
      continue;
    }
    // Same offset from the candidate to `hi`: the label starts at the candidate unless the clock
    // was turned back exactly there and the label was already showing before it.
    if (periodLabel(unit, timeZone, cand - 1) !== label) return cand;
    hi = cand - 1;
  }
  throw new Error(`period start not found for ${timeZone}`);
}

function computeEnd(unit: PeriodUnit, timeZone: string, atMs: number, label: number): number {
  let lo = atMs;
  for (let i = 0; i < MAX_HOPS; i++) {
    const o = offsetMs(timeZone, lo);
    const cand = nextLocal(unit, lo + o) - o;
    if (offsetMs(timeZone, cand - 1) !== o) {
      const t = transitionAfter(timeZone, lo, cand - 1);
      if (periodLabel(unit, timeZone, t) !== label) return t;
      lo = t;
      continue;
    }
    if (periodLabel(unit, timeZone, cand) !== label) return cand;
    lo = cand;
  }
  throw new Error(`period end not found for ${timeZone}`);
}

/** The period of `unit` containing `atMs` in `timeZone`, computed without any cache. */
export function computePeriodWindow(unit: PeriodUnit, timeZone: string, atMs: number): PeriodWindow {
  const label = periodLabel(unit, timeZone, atMs);
  return { startMs: computeStart(unit, timeZone, atMs, label), endMs: computeEnd(unit, timeZone, atMs, label) };
}

const lastWindows = new Map<string, PeriodWindow>();
const MAX_CACHED_WINDOWS = 10_000;

/**
 * The period of `unit` containing `atMs` in `timeZone` (an IANA name Intl accepts; callers
 * validate it). Cached per (zone, unit): repeated calls inside one period cost a map lookup.
 */
export function periodWindow(unit: PeriodUnit, timeZone: string, atMs: number): PeriodWindow {
  const key = `${timeZone}|${unit}`;
  const w = lastWindows.get(key);
  if (w !== undefined && atMs >= w.startMs && atMs < w.endMs) return w;
  const fresh = computePeriodWindow(unit, timeZone, atMs);
  if (lastWindows.size >= MAX_CACHED_WINDOWS) lastWindows.clear();
  lastWindows.set(key, fresh);
  return fresh;
}

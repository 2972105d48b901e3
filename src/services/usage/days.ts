import { localMs, periodWindow } from "../limits/periods.js";
import { SLOT_MS } from "./meter.js";

// Calendar helpers of usage: local days `YYYY-MM-DD` and months `YYYY-MM` of a tenant's zone.

const DAY_MS = 86_400_000;

/** The last local day asked for per zone, with its instants [startMs, endMs). */
const currentDays = new Map<string, { startMs: number; endMs: number; day: string }>();

/**
 * The local day of an instant in a zone, `YYYY-MM-DD`. RecordUsage asks this on every call, and
 * Intl's formatter is the costliest step of it: the answer is kept per zone for as long as
 * instants fall inside the same day.
 */
export function localDay(timeZone: string, atMs: number): string {
  const c = currentDays.get(timeZone);
  if (c !== undefined && atMs >= c.startMs && atMs < c.endMs) return c.day;
  const w = periodWindow("day", timeZone, atMs);
  const day = new Date(localMs(timeZone, w.startMs)).toISOString().slice(0, 10);
  if (currentDays.size >= 10_000) currentDays.clear();
  currentDays.set(timeZone, { startMs: w.startMs, endMs: w.endMs, day });
  return day;
}

const slotDays = new Map<string, string>();

/** The local day of a 15-minute usage slot (every zone's offset is a whole number of quarters). */
export function slotDay(timeZone: string, slot: number): string {
  const k = `${timeZone}|${slot}`;
  let d = slotDays.get(k);
  if (d === undefined) {
    d = localDay(timeZone, slot * SLOT_MS);
    if (slotDays.size > 50_000) slotDays.clear();
    slotDays.set(k, d);
  }
  return d;
}

/** `YYYY-MM-DD` plus `n` days. */
export function addDays(day: string, n: number): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) + n * DAY_MS).toISOString().slice(0, 10);
}

/** Whole days from `a` to `b`. */
export function daysBetween(a: string, b: string): number {
  return Math.round((Date.parse(`${b}T00:00:00Z`) - Date.parse(`${a}T00:00:00Z`)) / DAY_MS);
}

/** The month after `YYYY-MM`. */
export function nextPeriod(period: string): string {
  const [y, m] = period.split("-").map(Number) as [number, number];
  return m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, "0")}`;
}

/** The first local day of a month and of the month after: [from, to). */
export function periodDays(period: string): { from: string; to: string } {
  return { from: `${period}-01`, to: `${nextPeriod(period)}-01` };
}

/** Start and end (exclusive) instants of a local month, epoch ms. */
export function periodBounds(timeZone: string, period: string): { startMs: number; endMs: number } {
  // Noon UTC of the 15th lies inside the local month in every zone (offsets stay within ±14 h).
  const mid = Date.parse(`${period}-15T12:00:00Z`);
  const w = periodWindow("month", timeZone, mid);
  return { startMs: w.startMs, endMs: w.endMs };
}

import type { UsageDetailRow } from "../../store/usage-ports.js";

// The usage CSV export: pure formatting of the stored rows of one tenant's month.

const HEADER = ["tenant_id", "period", "date", "metric", "key_id", "method", "quantity", "events", "last_time"];
const CRLF = "\r\n";

/**
 * The CSV document (RFC 4180, CRLF line ends, header first) of a tenant's usage rows.
 *
 * Columns: `tenant_id, period, date, metric, key_id, method, quantity, events, last_time`, one
 * record per row, sorted by date, metric, key_id, then method (by UTF-16 code unit, so the order
 * does not depend on a locale). `date` is the stored row's: `YYYY-MM-DD` for a daily row,
 * `YYYY-MM` for a row compacted into its month. `last_time` is RFC 3339 in UTC with milliseconds
 * (`2024-05-31T23:59:59.999Z`); `key_id` and `method` are empty when the usage has none. Every
 * record, the last included, ends with CRLF; with no rows the document is the header line alone.
 * UTF-8, no byte-order mark.
 *
 * Quoting: a field containing a comma, a double quote, CR or LF is enclosed in double quotes, its
 * quotes doubled.
 *
 * Formula injection: spreadsheets run a cell starting with `=`, `+`, `-`, `@`, tab or CR as a
 * formula, and metric names, key ids and methods come from callers. A text field starting with one
 * of these characters is therefore prefixed with an apostrophe (`'`), which spreadsheets show as
 * text and hide; the value is otherwise unchanged (then quoted if it needs to be). The numeric
 * columns (`quantity`, `events`) and `last_time` are never altered, so a negative quantity stays
 * `-5`.
 */
export function usageCsv(tenantId: string, period: string, rows: readonly UsageDetailRow[]): string {
  const sorted = [...rows].sort(
    (a, b) => cmp(a.date, b.date) || cmp(a.metric, b.metric) || cmp(a.keyId, b.keyId) || cmp(a.method, b.method),
  );
  const tenant = textField(tenantId);
  const month = textField(period);
  let out = HEADER.join(",") + CRLF;
  for (const r of sorted) {
    out +=
      [
        tenant,
        month,
        textField(r.date),
        textField(r.metric),
        textField(r.keyId),
        textField(r.method),
        numberField(r.quantity),
        numberField(r.events),
        timeField(r.lastTimeMs),
      ].join(",") + CRLF;
  }
  return out;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const FORMULA_START = /^[=+\-@\t\r]/;
const NEEDS_QUOTES = /[",\r\n]/;

/** A text value: guarded against formula injection, then quoted when needed. */
function textField(value: string): string {
  return quote(FORMULA_START.test(value) ? `'${value}` : value);
}

function quote(value: string): string {
  return NEEDS_QUOTES.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** Integers in plain digits, even past 1e21 (never exponent notation); other numbers as JavaScript writes them. */
function numberField(n: number): string {
  return Number.isInteger(n) ? BigInt(n).toString() : String(n);
}

/** RFC 3339 UTC with milliseconds; empty when the time is not a valid instant. */
function timeField(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

// The usage CSV export: header, order, RFC 4180 quoting, the formula-injection guard, and a round
// trip through a strict RFC 4180 parser written here.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { usageCsv } from "../../src/services/usage/csv.js";
import type { UsageDetailRow } from "../../src/store/usage-ports.js";

const HEADER = "tenant_id,period,date,metric,key_id,method,quantity,events,last_time";
const T = Date.UTC(2024, 4, 31, 23, 59, 59, 999);

function row(p: Partial<UsageDetailRow>): UsageDetailRow {
  return {
    date: "2024-05-01",
    metric: "api_calls",
    keyId: "",
    method: "",
    quantity: 1,
    events: 1,
    lastTimeMs: T,
    ...p,
  };
}

/**
 * A strict RFC 4180 parser: records end with CRLF (the last one may not), fields are separated by
 * commas, a quoted field may hold commas, CR, LF and doubled quotes; anything else throws.
 */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw new Error("unterminated quoted field");
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
          } else {
            i++;
            break;
          }
        } else field += text[i++];
      }
    } else {
      while (i < text.length && text[i] !== "," && text[i] !== "\r") {
        if (text[i] === '"' || text[i] === "\n") throw new Error(`bare ${JSON.stringify(text[i])} at ${i}`);
        field += text[i++];
      }
    }
    fields.push(field);
    if (text[i] === ",") {
      i++;
      continue;
    }
    records.push(fields);
    fields = [];
    if (i >= text.length) return records;
    if (text.slice(i, i + 2) !== "\r\n") throw new Error(`expected CRLF at ${i}`);
    i += 2;
    if (i >= text.length) return records;
  }
}

describe("usageCsv", () => {
  it("writes the header alone, CRLF-terminated, when there are no rows", () => {
    expect(usageCsv("ten_1", "2024-05", [])).toBe(`${HEADER}\r\n`);
  });

  it("writes one record per row, with RFC 3339 UTC milliseconds and plain numbers", () => {
    const csv = usageCsv("ten_1", "2024-05", [
      row({ keyId: "key_a", method: "tenantd.v1.TenantService/GetTenant", quantity: 42, events: 42 }),
      row({ date: "2024-04", metric: "llm_tokens", quantity: 1e21, events: 3, lastTimeMs: 0 }),
    ]);
    expect(csv).toBe(
      `${HEADER}\r\n` +
        "ten_1,2024-05,2024-04,llm_tokens,,,1000000000000000000000,3,1970-01-01T00:00:00.000Z\r\n" +
        "ten_1,2024-05,2024-05-01,api_calls,key_a,tenantd.v1.TenantService/GetTenant,42,42,2024-05-31T23:59:59.999Z\r\n",
    );
  });

  it("sorts by date, metric, key_id, then method, by code unit", () => {
    const rows = [
      row({ date: "2024-05-02", metric: "a" }),
      row({ date: "2024-05-01", metric: "b", keyId: "k2" }),
      row({ date: "2024-05-01", metric: "b", keyId: "k1", method: "z" }),
      row({ date: "2024-05-01", metric: "b", keyId: "k1", method: "Z" }),
      row({ date: "2024-05-01", metric: "B" }),
      row({ date: "2024-05-01", metric: "a", keyId: "k9" }),
    ];
    const order = parseCsv(usageCsv("ten_1", "2024-05", rows))
      .slice(1)
      .map((f) => f.slice(2, 6).join("|"));
    expect(order).toEqual([
      "2024-05-01|B||",
      "2024-05-01|a|k9|",
      "2024-05-01|b|k1|Z",
      "2024-05-01|b|k1|z",
      "2024-05-01|b|k2|",
      "2024-05-02|a||",
    ]);
    expect(rows[0]!.date).toBe("2024-05-02"); // the input is not reordered
  });

  it("quotes fields with a comma, a quote, CR or LF, doubling the quotes", () => {
    const csv = usageCsv("ten_1", "2024-05", [
      row({ metric: "a,b", keyId: 'say "hi"', method: "line\nbreak" }),
      row({ date: "2024-05-02", metric: "cr\rhere", keyId: '"', method: "plain" }),
    ]);
    const lines = csv.split("\r\n");
    expect(lines[1]).toBe('ten_1,2024-05,2024-05-01,"a,b","say ""hi""","line\nbreak",1,1,2024-05-31T23:59:59.999Z');
    expect(lines[2]).toBe('ten_1,2024-05,2024-05-02,"cr\rhere","""",plain,1,1,2024-05-31T23:59:59.999Z');
  });

  it("neutralises formulas in text fields with a leading apostrophe, never in numbers", () => {
    const csv = usageCsv("=ten", "+1", [
      row({ metric: "=HYPERLINK(1)", keyId: "@SUM(A1)", method: "-2+3", quantity: -5, events: 0 }),
      row({ date: "2024-05-02", metric: "\tcmd", keyId: "\rx", method: "a=b" }),
    ]);
    const [, first, second] = parseCsv(csv);
    expect(first).toEqual([
      "'=ten",
      "'+1",
      "2024-05-01",
      "'=HYPERLINK(1)",
      "'@SUM(A1)",
      "'-2+3",
      "-5",
      "0",
      "2024-05-31T23:59:59.999Z",
    ]);
    expect(second!.slice(3, 6)).toEqual(["'\tcmd", "'\rx", "a=b"]);
    expect(csv).toContain(",'=HYPERLINK(1),"); // no quotes needed there
    expect(csv).toContain(`"'\rx"`); // the CR still forces quotes after the apostrophe
  });

  it("round-trips any rows through an RFC 4180 parser", () => {
    const text = fc.string({
      unit: fc.constantFrom("a", "Z", "0", ",", '"', "\r", "\n", "=", "+", "-", "@", "\t", "é", " "),
    });
    const rowArb = fc.record({
      date: fc.constantFrom("2024-05-01", "2024-05-02", "2024-05"),
      metric: text,
      keyId: text,
      method: text,
      quantity: fc.oneof(fc.integer({ min: -1e6, max: 1e15 }), fc.double({ noNaN: true, noDefaultInfinity: true })),
      events: fc.nat(),
      lastTimeMs: fc.integer({ min: 0, max: 4e12 }),
    });
    const guard = (s: string) => (/^[=+\-@\t\r]/.test(s) ? `'${s}` : s);
    fc.assert(
      fc.property(text, fc.array(rowArb, { maxLength: 12 }), (tenant, rows) => {
        const csv = usageCsv(tenant, "2024-05", rows);
        expect(csv.endsWith("\r\n")).toBe(true);
        const [header, ...records] = parseCsv(csv);
        expect(header!.join(",")).toBe(HEADER);
        expect(records).toHaveLength(rows.length);
        const expected = rows.map((r) => [
          guard(tenant),
          "2024-05",
          r.date,
          guard(r.metric),
          guard(r.keyId),
          guard(r.method),
          r.quantity,
          r.events,
          r.lastTimeMs,
        ]);
        const back = records.map((f) => [...f.slice(0, 6), Number(f[6]), Number(f[7]), Date.parse(f[8]!)]);
        const key = (f: readonly unknown[]) => f.slice(2, 6) as string[];
        // sorted by date, metric, key, method: each consecutive pair of unguarded keys in order
        for (let i = 1; i < records.length; i++) {
          const a = key(back[i - 1]!).map(unguard);
          const b = key(back[i]!).map(unguard);
          expect(compareKeys(a, b)).toBeLessThanOrEqual(0);
        }
        expect(sortRecords(back)).toEqual(sortRecords(expected));
      }),
      { numRuns: 500 },
    );
  });
});

function unguard(s: string): string {
  return /^'[=+\-@\t\r]/.test(s) ? s.slice(1) : s;
}

function compareKeys(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! < b[i]!) return -1;
    if (a[i]! > b[i]!) return 1;
  }
  return 0;
}

function sortRecords(records: readonly unknown[][]): string[] {
  return records.map((r) => JSON.stringify(r.map((v) => (Object.is(v, -0) ? 0 : v)))).sort();
}

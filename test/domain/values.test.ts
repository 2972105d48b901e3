import { describe, expect, it } from "vitest";
import { isTenantId, newId, tenantSchemaName } from "../../src/domain/ids.js";
import { isCurrency, isTimeZone, isWebhookUrl, SLUG_RE, slugify } from "../../src/domain/values.js";

describe("field values", () => {
  it("accepts IANA time zones and refuses others", () => {
    for (const tz of ["UTC", "Europe/Paris", "Asia/Qatar", "America/Argentina/Buenos_Aires"])
      expect(isTimeZone(tz)).toBe(true);
    for (const tz of ["Mars/Olympus", "", "Europe/Paris; drop", "GMT+25"]) expect(isTimeZone(tz)).toBe(false);
  });

  it("accepts ISO 4217 codes only", () => {
    expect(isCurrency("USD")).toBe(true);
    expect(isCurrency("EUR")).toBe(true);
    expect(isCurrency("usd")).toBe(false);
    expect(isCurrency("XYZ")).toBe(false);
  });

  it("derives valid slugs from any name", () => {
    expect(slugify("Acme Corp")).toBe("acme-corp");
    expect(slugify("Café  Déjà-Vu!!")).toBe("cafe-deja-vu");
    expect(slugify("日本")).toBe("tenant");
    expect(slugify("-".repeat(300))).toBe("tenant");
    const long = slugify("a ".repeat(200));
    expect(SLUG_RE.test(long)).toBe(true);
  });

  it("checks webhook URLs", () => {
    expect(isWebhookUrl("https://acme.com/hooks")).toBe(true);
    expect(isWebhookUrl("ftp://acme.com")).toBe(false);
    expect(isWebhookUrl("https://user:pw@acme.com")).toBe(false);
  });

  it("makes tenant ids whose schema names come from the id only", () => {
    const id = newId("ten");
    expect(isTenantId(id)).toBe(true);
    expect(tenantSchemaName(id)).toBe(`t_${id.slice(4)}`);
    expect(() => tenantSchemaName("ten_x; drop schema public")).toThrow();
    expect(() => tenantSchemaName("acme")).toThrow();
  });

  it("orders ids by creation time", () => {
    const a = newId("ten", 1_000);
    const b = newId("ten", 2_000);
    expect(a < b).toBe(true);
  });
});

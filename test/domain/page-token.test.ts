import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/domain/clock.js";
import { DomainError } from "../../src/domain/errors.js";
import { PageTokens, pageSize } from "../../src/domain/page-token.js";

describe("page tokens", () => {
  const clock = new ManualClock();
  const tokens = new PageTokens(Buffer.from("secret-one"), () => clock.now());

  it("round-trips a position for the same query", () => {
    const t = tokens.encode({ t: 123, id: "ten_x" }, "q1");
    expect(tokens.decode(t, "q1")).toEqual({ t: 123, id: "ten_x" });
    expect(tokens.decode("", "q1")).toBeUndefined();
  });

  it("refuses a token used with another query, tampered, forged or expired", () => {
    const t = tokens.encode({ t: 1, id: "a" }, "q1");
    const expectInvalid = (fn: () => unknown) => {
      try {
        fn();
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(DomainError);
        expect((e as DomainError).reason).toBe("PAGE_TOKEN_INVALID");
      }
    };
    expectInvalid(() => tokens.decode(t, "q2"));
    const [data, sig] = t.split(".");
    const forgedData = Buffer.from(JSON.stringify({ t: 1, id: "b", q: "q1", exp: 9e15 })).toString("base64url");
    expectInvalid(() => tokens.decode(`${forgedData}.${sig}`, "q1"));
    expectInvalid(() => tokens.decode(`${data}.x${sig}`, "q1"));
    expectInvalid(() => tokens.decode("garbage", "q1"));
    expectInvalid(() => new PageTokens(Buffer.from("other"), () => clock.now()).decode(t, "q1"));
    clock.advance(25 * 3600 * 1000);
    expectInvalid(() => tokens.decode(t, "q1"));
  });

  it("page size: 0 means 20, capped at 100", () => {
    expect(pageSize(0)).toBe(20);
    expect(pageSize(7)).toBe(7);
    expect(pageSize(1000)).toBe(100);
  });
});

// VerifyKey's answers kept per key record (services/verify-answer.ts) and the encoding the gRPC
// fast path keeps for them (services/reused-responses.ts). The end-to-end behaviour (repeated
// calls follow every change of the key) is in test/rpc/key-verify.test.ts.
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ErrorReason } from "../../gen/tenantd/v1/error_reason_pb.js";
import { VerifyKeyResponseSchema } from "../../gen/tenantd/v1/key_service_pb.js";
import type { KeyRecord } from "../../src/domain/types.js";
import { keepBytes, reusedBytes, reuseResponse } from "../../src/services/reused-responses.js";
import { createVerifyAnswers } from "../../src/services/verify-answer.js";
import { makeKey } from "../store/fixtures.js";

/** A tenant key record (test/store/fixtures.ts) with a fixed id and these permissions. */
const record = (permissions: string[]): KeyRecord => makeKey("ten_1", { kid: "0123456789abcdef", permissions });

describe("reused responses", () => {
  it("only a marked message has kept bytes, and only once they are kept", () => {
    const plain = create(VerifyKeyResponseSchema, { valid: true });
    expect(reusedBytes(plain)).toBeUndefined();
    const marked = reuseResponse(create(VerifyKeyResponseSchema, { valid: true }));
    expect(reusedBytes(marked)).toBeNull();
    const bytes = toBinary(VerifyKeyResponseSchema, marked);
    keepBytes(marked, bytes);
    expect(reusedBytes(marked)).toBe(bytes);
    expect(reuseResponse(marked)).toBe(marked);
    expect(reusedBytes(marked)).toBe(bytes); // marking again keeps the bytes
  });
});

describe("VerifyKey answers per key record", () => {
  const ok = (key: KeyRecord) => ({ ok: true as const, key, tenantStatus: "active" as const, rotatedSecret: false });

  it("one message per record, outcome and permission; each is marked for reuse", () => {
    const answer = createVerifyAnswers();
    const key = record(["keys:read"]);
    const a = answer(ok(key), "");
    expect(a).toMatchObject({ valid: true, keyId: "key_0123456789abcdef", permissions: ["keys:read"] });
    expect(answer(ok(key), "")).toBe(a);
    expect(reusedBytes(a)).toBeNull();
    const held = answer(ok(key), "keys:read");
    expect(held).not.toBe(a);
    expect(held.valid).toBe(true);
    const missing = answer(ok(key), "limits:check");
    expect(missing).toMatchObject({ valid: false, reason: ErrorReason.PERMISSION_MISSING });
    expect(answer(ok(key), "limits:check")).toBe(missing);
    const suspended = answer({ ...ok(key), tenantStatus: "suspended" }, "");
    expect(suspended).toMatchObject({ valid: false, reason: ErrorReason.TENANT_SUSPENDED });
    const rotated = answer({ ...ok({ ...key, prevValidUntil: 5000 }), rotatedSecret: true }, "");
    expect(rotated).toMatchObject({ valid: true, rotated: true });
    const revoked = answer({ ok: false, reason: "KEY_REVOKED", key, tenantStatus: "active" }, "");
    expect(revoked).toMatchObject({ valid: false, reason: ErrorReason.KEY_REVOKED });
    expect(answer(ok(key), "")).toBe(a);
  });

  it("a new record of the same key (reloaded after a change) gets new answers", () => {
    const answer = createVerifyAnswers();
    const before = answer(ok(record(["keys:read"])), "");
    const after = answer(ok(record(["keys:read", "usage:write"])), "");
    expect(after).not.toBe(before);
    expect(after.permissions).toEqual(["keys:read", "usage:write"]);
  });

  it("a verification without a key is answered afresh every time", () => {
    const answer = createVerifyAnswers();
    const a = answer({ ok: false, reason: "KEY_INVALID" }, "");
    expect(a).toMatchObject({ valid: false, reason: ErrorReason.KEY_INVALID, keyId: "" });
    expect(answer({ ok: false, reason: "KEY_INVALID" }, "")).not.toBe(a);
    expect(reusedBytes(a)).toBeUndefined();
  });

  it("past 8 distinct asked permissions, answers are still right but no longer kept", () => {
    const answer = createVerifyAnswers();
    const key = record(["p0"]);
    const kept = Array.from({ length: 8 }, (_, i) => answer(ok(key), `p${i}`));
    for (const [i, m] of kept.entries()) expect(answer(ok(key), `p${i}`)).toBe(m);
    const extra = answer(ok(key), "p9");
    expect(extra).toMatchObject({ valid: false, reason: ErrorReason.PERMISSION_MISSING });
    expect(answer(ok(key), "p9")).not.toBe(extra);
    expect(reusedBytes(extra)).toBeUndefined();
  });
});

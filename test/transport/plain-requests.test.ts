import { create, type DescMessage } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { KeyService, VerifyKeyRequestSchema } from "../../gen/tenantd/v1/key_service_pb.js";
import { LimitService } from "../../gen/tenantd/v1/limit_service_pb.js";
import { RecordUsageRequestSchema, UsageService } from "../../gen/tenantd/v1/usage_service_pb.js";
import {
  PLAIN_REQUEST_CHECKS,
  plainlyValidRecordUsage,
  plainlyValidVerifyKey,
} from "../../src/services/plain-requests.js";
import { errorInterceptor } from "../../src/transport/interceptors/errors.js";
import { validationInterceptor } from "../../src/transport/interceptors/validation.js";

// The validation interceptor skips protovalidate for requests that a hand-written check accepts
// (src/services/plain-requests.ts). Each check must be sound: every request it accepts passes
// protovalidate. Random requests around every boundary of the rules are held to protovalidate
// itself; CheckRateLimit's check has its own such test (test/limits/check-request.test.ts).

const validator = createValidator();
const valid = (schema: DescMessage, m: unknown) => validator.validate(schema, m as never).kind === "valid";

/** Checks soundness over `runs` random requests and that the check accepts most valid ones. */
function holdToProtovalidate<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  build: (r: T) => unknown,
  schema: DescMessage,
  check: (m: never) => boolean,
  complete: (r: T) => boolean,
) {
  let accepted = 0;
  let validTotal = 0;
  fc.assert(
    fc.property(arb, (r) => {
      const m = build(r);
      const ok = valid(schema, m);
      const plain = check(m as never);
      if (plain)
        expect(
          ok,
          JSON.stringify(r, (_, v) => (typeof v === "bigint" ? `${v}n` : v)),
        ).toBe(true);
      if (ok && complete(r)) {
        validTotal++;
        if (plain) accepted++;
      }
    }),
    { numRuns: 20_000 },
  );
  console.log(`[plain-requests] ${name}: accepted ${accepted} of ${validTotal} valid requests (20,000 random)`);
  expect(validTotal).toBeGreaterThan(300);
  expect(accepted).toBe(validTotal);
}

/** Mostly valid values, so that requests with one broken rule (or none) are common. */
const mix = <T>(good: T[], bad: T[]) =>
  fc.oneof({ arbitrary: fc.constantFrom(...good), weight: 4 }, { arbitrary: fc.constantFrom(...bad), weight: 1 });

const lengths = (chars: string[], ns: number[]) => fc.constantFrom(...chars.flatMap((c) => ns.map((n) => c.repeat(n))));

describe("plainlyValidVerifyKey", () => {
  it("accepts only requests protovalidate accepts, and every valid one", () => {
    holdToProtovalidate(
      "VerifyKey",
      fc.record({
        apiKey: lengths(["k", "ü", "😀"], [0, 1, 127, 128, 129, 255, 256, 257]),
        permission: lengths(["p", "é", "😀"], [0, 1, 32, 33, 63, 64, 65]),
      }),
      (r) => create(VerifyKeyRequestSchema, r),
      VerifyKeyRequestSchema,
      plainlyValidVerifyKey as (m: never) => boolean,
      // Complete where UTF-16 length and characters agree (the check turns down long astral keys).
      (r) => !r.apiKey.includes("😀") && !r.permission.includes("😀"),
    );
  });
});

describe("plainlyValidRecordUsage", () => {
  it("accepts only requests protovalidate accepts, and every valid one without a time", () => {
    const now = Date.now();
    holdToProtovalidate(
      "RecordUsage",
      fc.record({
        metric: mix(
          ["llm_tokens", "api_calls2", "a", "a".repeat(63)],
          ["", "api_calls", "a".repeat(64), "A", "1a", "_a", "a-b", "a b", "é", "a\n"],
        ),
        quantity: mix([1n, 1_000_000_000_000_000n], [-1n, 0n, 1_000_000_000_000_001n]),
        keyId: mix(["", "k", "k".repeat(64), "é".repeat(64)], ["k".repeat(65), "é".repeat(65)]),
        userId: mix(["", "u", "u-1.x:y@z|a+b_c", "u".repeat(128)], ["u".repeat(129), "a b", "é", "a/b", "u\n"]),
        eventId: mix(["", "e", "0b8f-2c:1.x_y", "e".repeat(128)], ["e".repeat(129), "a@b", "a+b", "é", "e\n"]),
        time: fc.option(fc.constantFrom(0, -36 * 86_400_000, -86_400_000, 60_000, 3_600_000), { nil: undefined }),
      }),
      (r) =>
        create(RecordUsageRequestSchema, {
          metric: r.metric,
          quantity: r.quantity,
          keyId: r.keyId,
          userId: r.userId,
          eventId: r.eventId,
          ...(r.time !== undefined ? { time: { seconds: BigInt(Math.floor((now + r.time) / 1000)), nanos: 0 } } : {}),
        }),
      RecordUsageRequestSchema,
      plainlyValidRecordUsage as (m: never) => boolean,
      (r) => r.time === undefined,
    );
  });
});

describe("PLAIN_REQUEST_CHECKS", () => {
  it("names unary methods that exist, one check each", () => {
    const methods = new Map(
      [KeyService, LimitService, UsageService].flatMap((s) => s.methods.map((m) => [`${s.typeName}/${m.name}`, m])),
    );
    expect(PLAIN_REQUEST_CHECKS.size).toBe(3);
    for (const procedure of PLAIN_REQUEST_CHECKS.keys()) {
      expect(methods.get(procedure)?.methodKind, procedure).toBe("unary");
    }
  });

  it("leaves requests the check turns down to protovalidate, with its field violations", async () => {
    const transport = createRouterTransport(
      (router) =>
        router.service(KeyService, {
          verifyKey: () => ({ valid: true }),
        } as never),
      { router: { interceptors: [errorInterceptor(() => {}), validationInterceptor(PLAIN_REQUEST_CHECKS)] } },
    );
    const { createClient } = await import("@connectrpc/connect");
    const client = createClient(KeyService, transport);
    expect((await client.verifyKey({ apiKey: "tdk_x" })).valid).toBe(true);
    const err = await client.verifyKey({ apiKey: "" }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.findDetails(ErrorInfoSchema)[0]?.reason).toBe("FIELD_INVALID");
    expect(err?.rawMessage).toContain("api_key");
  });
});

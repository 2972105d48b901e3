import { create } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CheckRateLimitRequestSchema } from "../../gen/tenantd/v1/limit_service_pb.js";
import { plainlyValidCheckRateLimit } from "../../src/services/rate-limit/check-request.js";

// The fold plans a CheckRateLimit bucket before the validation interceptor runs, on the strength
// of a hand-written check (src/services/rate-limit/check-request.ts). It must be sound: every
// request it accepts passes protovalidate. Random requests around every boundary of the rules
// (lengths in characters and UTF-16 units, ranges, the refill forms, durations, the name rule)
// are checked against protovalidate itself.

const validator = createValidator();
const valid = (m: ReturnType<typeof create<typeof CheckRateLimitRequestSchema>>) =>
  validator.validate(CheckRateLimitRequestSchema, m).kind === "valid";

const bucketNames = fc.constantFrom(
  "",
  "a",
  "bench.requests",
  "a-b_c.d:e9",
  "A",
  "1abc",
  "a b",
  "é",
  "a".repeat(63),
  "a".repeat(64),
);
const subjects = fc.constantFrom(
  "",
  "s",
  "ü",
  "x".repeat(256),
  "x".repeat(257),
  "😀".repeat(128),
  "😀".repeat(129),
  "😀".repeat(256),
);
const bigs = (xs: number[]) => fc.constantFrom(...xs.map((x) => BigInt(x)));
const definition = fc.record({
  name: fc.constantFrom("", "same", "other", "Bad"),
  capacity: bigs([-1, 0, 1, 5, 1e9, 1e9 + 1]),
  refillPerSecond: fc.constantFrom(0, 0.5, 1, 1e9, 1e9 + 1, -1, Number.NaN, Number.POSITIVE_INFINITY, 5e-324),
  refillAmount: bigs([-1, 0, 1, 1e9, 1e9 + 1]),
  refillInterval: fc.option(
    fc.record({
      seconds: bigs([-1, 0, 1, 2678399, 2678400, 2678401]),
      nanos: fc.constantFrom(-1, 0, 1, 999_999, 1_000_000, 999_999_999, 1_000_000_000),
    }),
    { nil: undefined },
  ),
});
const request = fc.record({
  bucket: bucketNames,
  subject: subjects,
  cost: fc.option(bigs([-1, 0, 1, 1e9, 1e9 + 1]), { nil: undefined }),
  definition: fc.option(definition, { nil: undefined }),
});

describe("plainlyValidCheckRateLimit", () => {
  it("accepts only requests protovalidate accepts (random requests around every rule's boundary)", () => {
    let accepted = 0;
    let validTotal = 0;
    fc.assert(
      fc.property(request, (r) => {
        const m = create(CheckRateLimitRequestSchema, {
          bucket: r.bucket,
          subject: r.subject,
          ...(r.cost !== undefined ? { cost: r.cost } : {}),
          ...(r.definition !== undefined
            ? {
                definition: {
                  ...r.definition,
                  name: r.definition.name === "same" ? r.bucket : r.definition.name,
                },
              }
            : {}),
        });
        const ok = valid(m);
        const plain = plainlyValidCheckRateLimit(m);
        if (plain) expect(ok).toBe(true);
        // Completeness is counted over normalised durations only: protovalidate also takes, say,
        // 1 s and -1 ns, which the check turns down (such requests simply are not folded).
        const nanos = r.definition?.refillInterval?.nanos ?? 0;
        if (ok && nanos >= 0 && nanos < 1_000_000_000) {
          validTotal++;
          if (plain) accepted++;
        }
      }),
      { numRuns: 20_000 },
    );
    console.log(
      `[check-request] accepted ${accepted} of ${validTotal} valid requests with normalised durations (20,000 random)`,
    );
    // Not vacuous, and complete there: the fold applies to every such valid request.
    expect(validTotal).toBeGreaterThan(300);
    expect(accepted).toBe(validTotal);
  });

  it("accepts the usual requests: a named bucket, an inline continuous or stepped definition, cost 0", () => {
    const reqs = [
      { bucket: "search", subject: "user-1" },
      { bucket: "search", subject: "user-1", cost: 0n },
      { bucket: "bench.requests", subject: "s", definition: { capacity: 1000000000n, refillPerSecond: 1e9 } },
      {
        bucket: "exports",
        subject: "s",
        definition: { name: "exports", capacity: 5n, refillAmount: 5n, refillInterval: { seconds: 3600n } },
      },
    ];
    for (const r of reqs) expect(plainlyValidCheckRateLimit(create(CheckRateLimitRequestSchema, r))).toBe(true);
  });
});

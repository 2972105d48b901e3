import type { CheckRateLimitRequest } from "../../../gen/tenantd/v1/limit_service_pb.js";

// Whether a CheckRateLimit request certainly passes its protovalidate rules
// (proto/tenantd/v1/limit_service.proto, CheckRateLimitRequest and RateLimitBucket), checked by
// hand. The fold (fold.ts) plans the requested bucket before the validation interceptor has run,
// and must never charge a bucket for a request that validation then refuses; running protovalidate
// a second time for that cost more than the Redis round trip the fold saves (its CEL rules were
// about a tenth of a CheckRateLimit call's CPU in the profile). The check only has to be sound:
// it may turn down valid requests (they take the usual path), never accept an invalid one.
// test/limits/check-request.test.ts holds it to protovalidate over random requests; a rule added
// to the proto must be added here too, or that test fails.

const BUCKET_NAME_RE = /^[a-z][a-z0-9_.:-]*$/;
const MAX = 1_000_000_000;
const MAX_INTERVAL_S = 2_678_400;

export function plainlyValidCheckRateLimit(req: CheckRateLimitRequest): boolean {
  // bucket: 1..63 characters of the pattern (ASCII only, so UTF-16 length is the character count).
  if (req.bucket.length < 1 || req.bucket.length > 63 || !BUCKET_NAME_RE.test(req.bucket)) return false;
  // subject: 1..256 characters (code points; UTF-16 units are never fewer, so counted only past 256).
  if (req.subject.length < 1 || (req.subject.length > 256 && codePoints(req.subject) > 256)) return false;
  if (req.cost !== undefined && (req.cost < 0n || req.cost > BigInt(MAX))) return false;
  const d = req.definition;
  if (d === undefined) return true;
  // definition.name empty or equal to bucket (check_rate_limit.definition_name); then the name's
  // own rule (empty or the pattern, at most 63) holds with the bucket's.
  if (d.name !== "" && d.name !== req.bucket) return false;
  if (d.capacity < 1n || d.capacity > BigInt(MAX)) return false;
  if (!(d.refillPerSecond >= 0 && d.refillPerSecond <= MAX)) return false;
  if (d.refillAmount < 0n || d.refillAmount > BigInt(MAX)) return false;
  const i = d.refillInterval;
  if (i !== undefined) {
    // A well-formed Duration between 1 ms and 31 days.
    if (i.seconds < 0n || i.nanos < 0 || i.nanos > 999_999_999) return false;
    if (i.seconds === 0n && i.nanos < 1_000_000) return false;
    if (i.seconds > BigInt(MAX_INTERVAL_S) || (i.seconds === BigInt(MAX_INTERVAL_S) && i.nanos > 0)) return false;
  }
  // rate_limit_bucket.refill: exactly one refill form.
  const continuous = d.refillPerSecond > 0 && d.refillAmount === 0n && i === undefined;
  const stepped = d.refillPerSecond === 0 && d.refillAmount > 0n && i !== undefined;
  return continuous || stepped;
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

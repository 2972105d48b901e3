import type { VerifyKeyRequest } from "../../gen/tenantd/v1/key_service_pb.js";
import type { RecordUsageRequest } from "../../gen/tenantd/v1/usage_service_pb.js";
import { plainlyValidCheckRateLimit } from "./rate-limit/check-request.js";

// Hand-written checks that a hot-path request certainly passes its protovalidate rules, so that
// the validation interceptor can skip protovalidate for it (its CEL and RE2 evaluation is several
// microseconds a call, a tenth of a CheckRateLimit's CPU). Each check only has to be sound: it may
// turn down a valid request (protovalidate then decides, as for every other method), never accept
// an invalid one. test/transport/plain-requests.test.ts holds every check to protovalidate over
// random requests around each rule's boundaries; a rule added to one of these messages in the
// proto must be added here too, or that test fails.
//
// Lengths: protovalidate counts characters (code points); a JavaScript string's length counts
// UTF-16 units, never fewer, so `length <= max` is sound for a maximum and `length >= 1` for a
// minimum of one. The patterns below are ASCII-only, so a string that matches one has as many
// characters as units.

/** `tenantd.v1.KeyService/VerifyKey`: api_key 1..256 characters, permission at most 64. */
export function plainlyValidVerifyKey(req: VerifyKeyRequest): boolean {
  return req.apiKey.length >= 1 && req.apiKey.length <= 256 && req.permission.length <= 64;
}

const METRIC_RE = /^[a-z][a-z0-9_]{0,62}$/;
const USER_ID_RE = /^[A-Za-z0-9_.:@|+-]{1,128}$/;
const EVENT_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const MAX_QUANTITY = 1_000_000_000_000_000n;

/**
 * `tenantd.v1.UsageService/RecordUsage` without a `time` (its rules depend on the clock, so a
 * request with one is left to protovalidate).
 */
export function plainlyValidRecordUsage(req: RecordUsageRequest): boolean {
  if (req.time !== undefined) return false;
  if (!METRIC_RE.test(req.metric) || req.metric === "api_calls") return false;
  if (req.quantity <= 0n || req.quantity > MAX_QUANTITY) return false;
  if (req.keyId.length > 64) return false;
  if (req.userId !== "" && !USER_ID_RE.test(req.userId)) return false;
  return req.eventId === "" || EVENT_ID_RE.test(req.eventId);
}

/** The checks by procedure (`<service type name>/<method name>`), for validationInterceptor. */
export const PLAIN_REQUEST_CHECKS: ReadonlyMap<string, (message: never) => boolean> = new Map<
  string,
  (message: never) => boolean
>([
  ["tenantd.v1.KeyService/VerifyKey", plainlyValidVerifyKey],
  ["tenantd.v1.LimitService/CheckRateLimit", plainlyValidCheckRateLimit],
  ["tenantd.v1.UsageService/RecordUsage", plainlyValidRecordUsage],
]);

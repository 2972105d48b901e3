import { create } from "@bufbuild/protobuf";
import { ErrorReason } from "../../gen/tenantd/v1/error_reason_pb.js";
import { Key_Environment, Key_Kind } from "../../gen/tenantd/v1/key_pb.js";
import { type VerifyKeyResponse, VerifyKeyResponseSchema } from "../../gen/tenantd/v1/key_service_pb.js";
import type { KeyRecord } from "../domain/types.js";
import { tenantStatusToProto, ts } from "./convert.js";
import type { Verification } from "./key-verifier.js";
import { reuseResponse } from "./reused-responses.js";

/** Distinct answers kept per key record (one per outcome and asked permission). */
const ANSWERS_PER_KEY = 8;

/**
 * VerifyKey's answer to a verification. The answer is a function of the key record, the outcome
 * and the asked permission only, and a cached key's record is one object until its cache entry
 * is replaced (an invalidation, the TTL): so the answers are kept per record object, and a hot
 * key's VerifyKey answers with the same message every time, encoded once on the gRPC fast path
 * (reused-responses.ts). A new record (the key or its tenant changed) starts afresh.
 */
export function createVerifyAnswers(): (v: Verification, permission: string) => VerifyKeyResponse {
  const kept = new WeakMap<KeyRecord, Map<string, VerifyKeyResponse>>();
  return (v, permission) => {
    const key = v.key;
    if (!key) return build(v, permission);
    const tag = `${v.ok ? (v.rotatedSecret ? "rotated" : "ok") : v.reason}|${v.tenantStatus}|${permission}`;
    let answers = kept.get(key);
    const known = answers?.get(tag);
    if (known) return known;
    const answer = build(v, permission);
    if (!answers) {
      answers = new Map();
      kept.set(key, answers);
    }
    if (answers.size < ANSWERS_PER_KEY) answers.set(tag, reuseResponse(answer));
    return answer;
  };
}

function build(v: Verification, permission: string): VerifyKeyResponse {
  const key = v.key;
  const base = key
    ? {
        tenantId: key.tenantId ?? "",
        keyId: `key_${key.kid}`,
        kind: key.kind === "owner" ? Key_Kind.OWNER : Key_Kind.TENANT,
        environment: key.env === "live" ? Key_Environment.LIVE : Key_Environment.TEST,
        permissions: [...key.permissions],
        tenantStatus: v.tenantStatus ? tenantStatusToProto(v.tenantStatus) : undefined,
        expireTime: ts(key.expiresAt),
      }
    : {};
  if (!v.ok) {
    return create(VerifyKeyResponseSchema, { ...base, valid: false, reason: ErrorReason[v.reason] });
  }
  if (v.key.kind === "tenant" && v.tenantStatus === "suspended") {
    return create(VerifyKeyResponseSchema, { ...base, valid: false, reason: ErrorReason.TENANT_SUSPENDED });
  }
  if (permission !== "" && !v.key.permissions.includes(permission)) {
    return create(VerifyKeyResponseSchema, { ...base, valid: false, reason: ErrorReason.PERMISSION_MISSING });
  }
  return create(VerifyKeyResponseSchema, {
    ...base,
    valid: true,
    rotated: v.rotatedSecret,
    graceEndTime: v.rotatedSecret ? ts(v.key.prevValidUntil) : undefined,
  });
}

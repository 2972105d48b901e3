// Domain errors: services throw these with a reason from the ErrorReason enum (by name) and
// metadata; one interceptor turns them into ConnectError with google.rpc details, and one table
// turns codes into HTTP statuses. Services never build transport errors themselves.

/** Canonical status codes, as named by gRPC (lower snake case). */
export type ErrorCode =
  | "invalid_argument"
  | "failed_precondition"
  | "out_of_range"
  | "unauthenticated"
  | "permission_denied"
  | "not_found"
  | "already_exists"
  | "aborted"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "unimplemented"
  | "internal";

/** Names of tenantd.v1.ErrorReason values. */
export type Reason =
  | "KEY_MISSING"
  | "KEY_INVALID"
  | "KEY_REVOKED"
  | "KEY_EXPIRED"
  | "KEY_ROTATED"
  | "TENANT_SUSPENDED"
  | "TENANT_NOT_FOUND"
  | "PERMISSION_MISSING"
  | "OWNER_KEY_REQUIRED"
  | "ACT_AS_FORBIDDEN"
  | "TENANT_CONTEXT_REQUIRED"
  | "RATE_LIMITED"
  | "QUOTA_EXCEEDED"
  | "FIELD_INVALID"
  | "FIELD_IMMUTABLE"
  | "KEY_NOT_FOUND"
  | "SLUG_TAKEN"
  | "REQUEST_ID_CONFLICT"
  | "PAGE_TOKEN_INVALID"
  | "ETAG_MISMATCH"
  | "RESOURCE_NOT_FOUND"
  | "RESOURCE_EXISTS"
  | "STATE_CONFLICT"
  | "NOT_IMPLEMENTED"
  | "BACKEND_UNAVAILABLE"
  | "INTERNAL_ERROR"
  | "REQUEST_MALFORMED"
  | "DEADLINE_EXCEEDED"
  | "REQUEST_TOO_LARGE"
  | "ROUTE_NOT_FOUND";

/** One invalid field of a request, as in google.rpc.BadRequest.FieldViolation. */
export interface FieldViolation {
  /** Field path in proto names, e.g. `timezone` or `metadata["plan"]`. */
  field: string;
  description: string;
  /** The ErrorReason for this field: FIELD_INVALID or FIELD_IMMUTABLE. */
  reason: "FIELD_INVALID" | "FIELD_IMMUTABLE";
}

/** A limit that tripped, as in google.rpc.QuotaFailure.Violation. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

export interface DomainErrorInit {
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  retryAfterMs?: number;
  quotaViolations?: QuotaViolation[];
  /** Response headers (trailers in gRPC) sent with the error, e.g. the RateLimit-* headers. */
  headers?: Record<string, string>;
  cause?: unknown;
}

export class DomainError extends Error {
  readonly code: ErrorCode;
  readonly reason: Reason;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  readonly retryAfterMs: number | undefined;
  readonly quotaViolations: QuotaViolation[];
  /** Mutable so that an interceptor the error passes through can add its headers. */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, reason: Reason, message: string, init: DomainErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "DomainError";
    this.code = code;
    this.reason = reason;
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.retryAfterMs = init.retryAfterMs;
    this.quotaViolations = init.quotaViolations ?? [];
    this.headers = { ...init.headers };
  }
}

/** INVALID_ARGUMENT FIELD_INVALID for one or more fields. */
export function invalidFields(violations: Array<Omit<FieldViolation, "reason">>): DomainError {
  const first = violations[0];
  const message =
    violations.length === 1 && first
      ? `invalid ${first.field}: ${first.description}`
      : `invalid fields: ${violations.map((v) => v.field).join(", ")}`;
  return new DomainError("invalid_argument", "FIELD_INVALID", message, {
    fieldViolations: violations.map((v) => ({ ...v, reason: "FIELD_INVALID" as const })),
    metadata: { fields: violations.map((v) => v.field).join(",") },
  });
}

export function invalidField(field: string, description: string): DomainError {
  return invalidFields([{ field, description }]);
}

/** INVALID_ARGUMENT FIELD_IMMUTABLE for a field that cannot change after creation. */
export function immutableField(field: string): DomainError {
  return new DomainError("invalid_argument", "FIELD_IMMUTABLE", `${field} is immutable`, {
    fieldViolations: [{ field, description: `${field} cannot be changed after creation`, reason: "FIELD_IMMUTABLE" }],
    metadata: { field },
  });
}

export function tenantNotFound(tenantId: string): DomainError {
  return new DomainError("not_found", "TENANT_NOT_FOUND", `tenant ${tenantId} not found`, {
    metadata: { tenant_id: tenantId },
  });
}

export function keyNotFound(keyId: string): DomainError {
  return new DomainError("not_found", "KEY_NOT_FOUND", `key ${keyId} not found`, { metadata: { key_id: keyId } });
}

export function unavailable(what: string, cause?: unknown): DomainError {
  return new DomainError("unavailable", "BACKEND_UNAVAILABLE", `${what} is unavailable; retry later`, {
    metadata: { backend: what },
    cause,
  });
}

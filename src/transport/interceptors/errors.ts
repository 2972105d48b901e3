import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import { DomainError, type ErrorCode, type Reason } from "../../domain/errors.js";

// Turns every failure into a ConnectError that carries a google.rpc.ErrorInfo (reason from the
// ErrorReason enum, domain "tenantd", metadata), plus BadRequest, RetryInfo and QuotaFailure where
// they apply. Unexpected errors become INTERNAL with no driver message; the caller gets the
// request id to quote, and the log gets the cause.

export const ERROR_DOMAIN = "tenantd";

const codes: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  failed_precondition: Code.FailedPrecondition,
  out_of_range: Code.OutOfRange,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  aborted: Code.Aborted,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  deadline_exceeded: Code.DeadlineExceeded,
  unimplemented: Code.Unimplemented,
  internal: Code.Internal,
};

/** Reason given to errors raised by the RPC runtime itself, which carry no ErrorInfo. */
const reasonOfCode: Partial<Record<Code, Reason>> = {
  [Code.InvalidArgument]: "REQUEST_MALFORMED",
  [Code.ResourceExhausted]: "REQUEST_TOO_LARGE",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.Unimplemented]: "NOT_IMPLEMENTED",
  [Code.Unavailable]: "BACKEND_UNAVAILABLE",
  [Code.Internal]: "INTERNAL_ERROR",
  [Code.Unknown]: "INTERNAL_ERROR",
};

function durationOf(ms: number): { seconds: bigint; nanos: number } {
  const whole = Math.max(0, Math.ceil(ms));
  return { seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 };
}

export function toConnectError(e: DomainError): ConnectError {
  const details: ConstructorParameters<typeof ConnectError>[3] = [
    { desc: ErrorInfoSchema, value: { reason: e.reason, domain: ERROR_DOMAIN, metadata: e.metadata } },
  ];
  if (e.fieldViolations.length > 0) {
    details.push({
      desc: BadRequestSchema,
      value: {
        fieldViolations: e.fieldViolations.map((v) => ({
          field: v.field,
          description: v.description,
          reason: v.reason,
        })),
      },
    });
  }
  if (e.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: { retryDelay: durationOf(e.retryAfterMs) } });
  }
  if (e.quotaViolations.length > 0) {
    details.push({ desc: QuotaFailureSchema, value: { violations: e.quotaViolations } });
  }
  const metadata = Object.keys(e.headers).length > 0 ? new Headers(e.headers) : undefined;
  return new ConnectError(e.message, codes[e.code], metadata, details, e);
}

/** Ensures an error raised outside the services (by the runtime) still carries ErrorInfo. */
function withErrorInfo(e: ConnectError): ConnectError {
  if (e.findDetails(ErrorInfoSchema).length > 0) return e;
  const reason = reasonOfCode[e.code] ?? "INTERNAL_ERROR";
  const internal = e.code === Code.Internal || e.code === Code.Unknown;
  return new ConnectError(
    internal ? "internal error" : e.rawMessage,
    internal ? Code.Internal : e.code,
    e.metadata,
    [{ desc: ErrorInfoSchema, value: { reason, domain: ERROR_DOMAIN, metadata: {} } }],
    e,
  );
}

export function errorInterceptor(onInternal: (err: unknown, procedure: string) => void): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof DomainError) {
        if (err.code === "internal" || err.code === "unavailable") onInternal(err.cause ?? err, req.url);
        throw toConnectError(err);
      }
      if (err instanceof ConnectError) throw withErrorInfo(err);
      onInternal(err, req.url);
      throw new ConnectError("internal error", Code.Internal, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "INTERNAL_ERROR", domain: ERROR_DOMAIN, metadata: {} } },
      ]);
    }
  };
}

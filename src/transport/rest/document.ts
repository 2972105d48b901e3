// tenantd's OpenAPI document: the generic generator (openapi.ts) given tenantd's authentication,
// its `x-tenant-id` header, its error body and the proto comments.
//
// Comments come from gen/tenantd.binpb, a descriptor set with source info that `npm run generate`
// writes with `buf build` (protobuf-es generated code keeps options but drops comments), and that
// scripts/check-gen.sh keeps in step with proto/.
import { readFileSync } from "node:fs";
import { type DescMethod, type DescService, fromBinary, type JsonObject } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../../../gen/google/rpc/status_pb.js";
import { Audience, accessOf } from "../access.js";
import { buildOpenApi, commentsFromDescriptorSet } from "./openapi.js";

export const DESCRIPTOR_SET_URL = new URL("../../../gen/tenantd.binpb", import.meta.url);

const TENANT_HEADER: JsonObject = {
  name: "x-tenant-id",
  in: "header",
  required: false,
  description:
    "Owner keys only: act on behalf of this tenant (`ten_…`), exactly as with the tenant's own key. " +
    "A tenant key that names another tenant is refused.",
  schema: { type: "string", pattern: "^ten_[A-Za-z0-9]+$" },
};

const RATE_HEADERS: Record<string, JsonObject> = {
  "Retry-After": { description: "Seconds to wait before retrying.", schema: { type: "integer", minimum: 0 } },
  "RateLimit-Limit": { description: "The limit that was reached.", schema: { type: "integer" } },
  "RateLimit-Remaining": { description: "What is left in the current window.", schema: { type: "integer" } },
  "RateLimit-Reset": { description: "Seconds until the window resets.", schema: { type: "integer" } },
};

/** The document for `services`, with comments from `descriptorSet` (bytes of gen/tenantd.binpb). */
export function tenantdOpenApi(services: readonly DescService[], descriptorSet?: Uint8Array): JsonObject {
  const bytes = descriptorSet ?? readFileSync(DESCRIPTOR_SET_URL);
  const comments = commentsFromDescriptorSet(fromBinary(FileDescriptorSetSchema, bytes));
  const tenantScoped = (m: DescMethod) => {
    const a = accessOf(m)?.audience;
    return a === Audience.TENANT || a === Audience.OWNER_OR_TENANT;
  };
  return buildOpenApi({
    services,
    comments,
    info: {
      title: "tenantd",
      version: "v1",
      description:
        "The REST face of tenantd, transcoded from the `tenantd.v1` protos (`google.api.http`). " +
        "The same RPCs are served over gRPC, gRPC-Web and Connect on the same port. Errors are " +
        "`google.rpc.Status` JSON with an `ErrorInfo` detail (domain `tenantd`).",
    },
    securitySchemes: {
      bearer: {
        type: "http",
        scheme: "bearer",
        description: "An owner or tenant API key: `authorization: Bearer tdk_…`.",
      },
    },
    security: [{ bearer: [] }],
    operationSecurity: (m) => (accessOf(m)?.audience === Audience.PUBLIC ? [] : undefined),
    parameters: (m) => (tenantScoped(m) ? [TENANT_HEADER] : []),
    errorMessage: StatusSchema,
    errorResponses: {
      "400": { description: "Malformed request (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE)." },
      "401": { description: "Missing, malformed, unknown, revoked or expired key (UNAUTHENTICATED)." },
      "403": { description: "The key lacks the permission, or the tenant is suspended (PERMISSION_DENIED)." },
      "404": { description: "No such resource, or not the caller's (NOT_FOUND)." },
      "409": { description: "Conflict: already exists, or an etag mismatch (ALREADY_EXISTS, ABORTED)." },
      "413": { description: "The request body is too large." },
      "422": { description: "Well-formed request with invalid field values (FIELD_INVALID, FIELD_IMMUTABLE)." },
      "429": { description: "Rate limit or quota reached (RESOURCE_EXHAUSTED).", headers: RATE_HEADERS },
      "500": { description: "Internal error; the response's `x-request-id` names it in the logs." },
      "501": { description: "Not implemented yet (UNIMPLEMENTED)." },
      "503": { description: "A backend is unavailable (UNAVAILABLE)." },
      "504": { description: "The deadline passed (DEADLINE_EXCEEDED)." },
    },
  });
}

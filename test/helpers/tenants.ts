// Small helpers shared by the TenantService tests (test/rpc/tenant-*.test.ts).
import { randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import type { Tenant } from "../../gen/tenantd/v1/tenant_pb.js";
import { type CreateTenantRequestSchema, TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { keyIdOf, parseKey } from "../../src/domain/key-format.js";
import { expectError, type Harness, type Protocol } from "./app.js";

/** A short random suffix, lowercase letters and digits, so names, slugs and plans never collide. */
export function unique(prefix = ""): string {
  return `${prefix}${randomBytes(5).toString("hex")}`;
}

/** A plan name no other test uses, to filter ListTenants down to one test's tenants. */
export function uniquePlan(): string {
  return unique("p");
}

/** The public `key_…` id of a full API key. */
export function keyIdOfApiKey(apiKey: string): string {
  const parsed = parseKey(apiKey);
  if (!parsed) throw new Error("not a tenantd key");
  return keyIdOf(parsed.kid);
}

/** The owner creates a tenant with the given fields (a unique name and a valid email by default). */
export async function createTenant(
  h: Harness,
  init: Omit<MessageInitShape<typeof CreateTenantRequestSchema>, "$typeName"> = {},
  protocol: Protocol = "connect",
): Promise<Tenant> {
  const { tenant } = await h
    .client(TenantService, protocol)
    .createTenant({ name: unique("Tenant "), email: "admin@example.com", ...init }, h.as(h.ownerKey));
  if (!tenant) throw new Error("CreateTenant answered no tenant");
  return tenant;
}

/** The bootstrap owner creates another owner key holding only `permissions`. */
export async function ownerKeyWith(h: Harness, permissions: string[]): Promise<string> {
  const res = await h
    .client(KeyService)
    .createOwnerKey({ label: `narrow ${permissions.join(" ")}`, permissions }, h.as(h.ownerKey));
  return res.apiKey;
}

/**
 * Asserts INVALID_ARGUMENT with the ErrorInfo reason and a google.rpc.BadRequest violation of
 * `field` carrying the same reason.
 */
export async function expectFieldError(
  p: Promise<unknown>,
  reason: "FIELD_INVALID" | "FIELD_IMMUTABLE",
  field: string,
): Promise<ConnectError> {
  const err = await expectError(p, Code.InvalidArgument, reason);
  const violations = err
    .findDetails(BadRequestSchema)
    .flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, reason: v.reason })));
  expect(violations).toContainEqual({ field, reason });
  return err;
}

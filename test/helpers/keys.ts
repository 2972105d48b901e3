// Helpers shared by the KeyService tests (test/rpc/key-*.test.ts, owner-keys.test.ts).
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Key } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { type Tenant, Tenant_Environment } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError, type Harness, type Protocol } from "./app.js";

/** The protocols every key test runs over; gRPC-Web is added where a file is cheap. */
export const KEY_PROTOCOLS: Protocol[] = ["grpc", "connect"];

/** Anything shaped like a full API key, anywhere in a string. */
export const SECRET_RE = /tdk_[a-z]+_[a-z]+_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}/;

/** Milliseconds of an optional timestamp; null when unset. */
export function msOf(t: Timestamp | undefined): number | null {
  return t === undefined ? null : timestampMs(t);
}

/** A message as JSON text, with every string field in it (bigints as strings). */
export function jsonOf(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

/** Asserts that no secret-shaped string appears anywhere in the given responses. */
export function expectNoSecret(...responses: unknown[]): void {
  for (const r of responses) expect(jsonOf(r)).not.toMatch(SECRET_RE);
}

/** Field paths of the BadRequest violations an error carries. */
export function violatedFields(err: ConnectError): string[] {
  return err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
}

/** Asserts code, reason and the exact list of violated fields. */
export async function expectFieldError(p: Promise<unknown>, code: Code, fields: string[]): Promise<ConnectError> {
  const err = await expectError(p, code, "FIELD_INVALID");
  expect(violatedFields(err)).toEqual(fields);
  return err;
}

/** The owner creates a tenant without any key. */
export async function bareTenant(h: Harness, environment = Tenant_Environment.SANDBOX): Promise<Tenant> {
  const { tenant } = await h
    .client(TenantService)
    .createTenant(
      { name: `Keys ${Math.random().toString(36).slice(2, 8)}`, email: "keys@example.com", environment },
      h.as(h.ownerKey),
    );
  if (!tenant) throw new Error("no tenant");
  return tenant;
}

/** The owner creates a tenant key with the given permissions (empty: all). */
export async function tenantKey(
  h: Harness,
  tenantId: string,
  init: { permissions?: string[]; label?: string; expireTime?: Timestamp } = {},
): Promise<{ apiKey: string; key: Key }> {
  const res = await h
    .client(KeyService)
    .createKey(
      { tenantId, label: init.label ?? "test key", permissions: init.permissions ?? [], expireTime: init.expireTime },
      h.as(h.ownerKey),
    );
  if (!res.key) throw new Error("no key");
  return { apiKey: res.apiKey, key: res.key };
}

/** The bootstrap owner key creates an owner key with the given permissions (empty: all). */
export async function ownerKey(
  h: Harness,
  permissions: string[],
  init: { label?: string; expireTime?: Timestamp; by?: string } = {},
): Promise<{ apiKey: string; key: Key }> {
  const res = await h
    .client(KeyService)
    .createOwnerKey(
      { label: init.label ?? "service key", permissions, expireTime: init.expireTime },
      h.as(init.by ?? h.ownerKey),
    );
  if (!res.key) throw new Error("no key");
  return { apiKey: res.apiKey, key: res.key };
}

/** A call any tenant key with `keys:read` may make; used to probe whether a key is accepted. */
export function probeTenantKey(h: Harness, protocol: Protocol, apiKey: string) {
  return h.client(KeyService, protocol).listKeys({ pageSize: 1 }, h.as(apiKey));
}

// KeyService.CreateOwnerKey, ListOwnerKeys and RevokeOwnerKey. This file's harness starts with one
// owner key (the bootstrap key), so the lock-out guard, "the last active owner key holding
// owner-keys:write cannot be revoked", is tested from a known count.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Key_Environment, Key_Kind, Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { parseKey } from "../../src/domain/key-format.js";
import { OWNER_PERMISSIONS } from "../../src/domain/permissions.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, expectFieldError, expectNoSecret, ownerKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
let bootstrapId: string;
beforeAll(async () => {
  h = await startHarness();
  bootstrapId = `key_${parseKey(h.ownerKey)?.kid}`;
});
afterAll(async () => {
  await h?.close();
});

const sorted = (a: readonly string[]) => [...a].sort();
const keys = (protocol: "grpc" | "connect" | "grpc-web" = "connect") => h.client(KeyService, protocol);
const owner = () => h.as(h.ownerKey);

// Runs first: it relies on the bootstrap key being the only owner key at start.
describe("FAILED_PRECONDITION: the owner cannot lock itself out", () => {
  it("at start the bootstrap key is the only owner key, and revoking it is STATE_CONFLICT", async () => {
    const list = await keys().listOwnerKeys({ includeRevoked: true }, owner());
    expect(list.keys.map((k) => k.id)).toEqual([bootstrapId]);
    expect(list.keys[0]?.permissions).toContain("owner-keys:write");
    for (const protocol of ["grpc", "connect"] as const) {
      await expectError(
        keys(protocol).revokeOwnerKey({ keyId: bootstrapId }, owner()),
        Code.FailedPrecondition,
        "STATE_CONFLICT",
      );
    }
    await keys().listOwnerKeys({}, owner()); // still works
  });

  it("keys without owner-keys:write, expired ones and revoked ones do not count", async () => {
    await ownerKey(h, ["tenants:read", "keys:verify"]);
    const expiring = await ownerKey(h, ["owner-keys:write"], { expireTime: timestampFromMs(h.clock.now() + 1000) });
    const revoked = await ownerKey(h, ["owner-keys:write"]);
    await keys().revokeOwnerKey({ keyId: revoked.key.id }, owner());
    // From the expiring key's expiry on, the bootstrap key is again the only active holder.
    h.clock.advance(1000);
    await expectError(
      keys().revokeOwnerKey({ keyId: bootstrapId }, owner()),
      Code.FailedPrecondition,
      "STATE_CONFLICT",
    );
    await expectError(keys().listOwnerKeys({}, h.as(expiring.apiKey)), Code.Unauthenticated, "KEY_EXPIRED");
  });

  it("with two active holders one may go, then the other is the last", async () => {
    const spare = await ownerKey(h, ["owner-keys:write"]);
    const self = await ownerKey(h, ["owner-keys:write"]);
    // Three holders (bootstrap, spare, self): the spare goes, then self revokes itself.
    await keys().revokeOwnerKey({ keyId: spare.key.id }, owner());
    const res = await keys().revokeOwnerKey({ keyId: self.key.id }, h.as(self.apiKey));
    expect(res.key?.state).toBe(Key_State.REVOKED);
    await expectError(keys().listOwnerKeys({}, h.as(self.apiKey)), Code.Unauthenticated, "KEY_REVOKED");
    await expectError(
      keys().revokeOwnerKey({ keyId: bootstrapId }, owner()),
      Code.FailedPrecondition,
      "STATE_CONFLICT",
    );
  });
});

describe.each(PROTOCOLS)("owner keys over %s", (protocol) => {
  const client = () => keys(protocol);

  describe("OK: CreateOwnerKey", () => {
    it("a narrow service key gets exactly its permissions and can do only that", async () => {
      const res = await client().createOwnerKey({ label: "reporting", permissions: ["tenants:read"] }, owner());
      const kid = res.key?.id.slice(4);
      expect(parseKey(res.apiKey)).toEqual({ kind: "owner", env: "live", kid });
      expect(res.key).toMatchObject({
        tenantId: "",
        kind: Key_Kind.OWNER,
        environment: Key_Environment.LIVE,
        permissions: ["tenants:read"],
        prefix: `tdk_owner_live_${kid}_`,
        lastFour: res.apiKey.slice(-4),
        state: Key_State.ACTIVE,
      });
      const tenants = h.client(TenantService, protocol);
      await tenants.listTenants({ pageSize: 1 }, h.as(res.apiKey));
      await expectError(
        tenants.createTenant({ name: "x", email: "x@example.com" }, h.as(res.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });

    it("without a list the key gets every owner permission; TEST environment on request", async () => {
      const res = await client().createOwnerKey({ label: "full", environment: Key_Environment.TEST }, owner());
      expect(sorted(res.key?.permissions ?? [])).toEqual(sorted(OWNER_PERMISSIONS));
      expect(res.apiKey.startsWith("tdk_owner_test_")).toBe(true);
      expect(res.key?.environment).toBe(Key_Environment.TEST);
    });

    it("a narrow caller without a list grants only what it holds", async () => {
      const caller = await ownerKey(h, ["owner-keys:write", "tenants:read"]);
      const res = await client().createOwnerKey({ label: "child" }, h.as(caller.apiKey));
      expect(sorted(res.key?.permissions ?? [])).toEqual(["owner-keys:write", "tenants:read"]);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("an unknown permission is FIELD_INVALID naming permissions[0]", async () => {
      await expectFieldError(
        client().createOwnerKey({ label: "x", permissions: ["tenants:fly"] }, owner()),
        Code.InvalidArgument,
        ["permissions[0]"],
      );
    });

    it("an expire_time in the past is FIELD_INVALID", async () => {
      await expectFieldError(
        client().createOwnerKey({ label: "x", expireTime: timestampFromMs(h.clock.now() - 1) }, owner()),
        Code.InvalidArgument,
        ["expire_time"],
      );
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("a caller cannot grant a permission it lacks", async () => {
      const caller = await ownerKey(h, ["owner-keys:write", "tenants:read"]);
      const err = await expectError(
        client().createOwnerKey(
          { label: "escalate", permissions: ["tenants:read", "tenants:write"] },
          h.as(caller.apiKey),
        ),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      expect(err.rawMessage).toContain("tenants:write");
    });

    it("an owner key without owner-keys:write can neither create, list nor revoke owner keys", async () => {
      const caller = await ownerKey(h, ["tenants:read", "tenants:write"]);
      const as = h.as(caller.apiKey);
      await expectError(client().createOwnerKey({ label: "x" }, as), Code.PermissionDenied, "PERMISSION_MISSING");
      await expectError(client().listOwnerKeys({}, as), Code.PermissionDenied, "PERMISSION_MISSING");
      await expectError(
        client().revokeOwnerKey({ keyId: caller.key.id }, as),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });

    it("tenant keys cannot call owner-key RPCs: OWNER_KEY_REQUIRED", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const as = h.as(apiKey);
      await expectError(client().createOwnerKey({ label: "x" }, as), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
      await expectError(client().listOwnerKeys({}, as), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
      await expectError(client().revokeOwnerKey({ keyId: key.id }, as), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
      await expectError(
        client().revokeOwnerKey({ keyId: bootstrapId }, as),
        Code.PermissionDenied,
        "OWNER_KEY_REQUIRED",
      );
    });
  });

  describe("OK: ListOwnerKeys", () => {
    it("page_size 2: every key once, newest first, no secrets", async () => {
      const mine: string[] = [];
      for (let i = 0; i < 5; i++) {
        h.clock.advance(1);
        mine.push((await ownerKey(h, ["tenants:read"], { label: `page ${i}` })).key.id);
      }
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const res = await client().listOwnerKeys({ pageSize: 2, pageToken }, owner());
        expectNoSecret(res);
        expect(res.keys.length).toBeLessThanOrEqual(2);
        expect(res.keys.every((k) => k.kind === Key_Kind.OWNER && k.tenantId === "")).toBe(true);
        seen.push(...res.keys.map((k) => k.id));
        pageToken = res.nextPageToken;
        pages++;
      } while (pageToken !== "" && pages < 100);
      expect(new Set(seen).size).toBe(seen.length);
      // The five just created are the newest owner keys.
      expect(seen.slice(0, 5)).toEqual([...mine].reverse());
      expect(seen).toContain(bootstrapId);
      const all = await client().listOwnerKeys({ pageSize: 100 }, owner());
      expect(all.keys.map((k) => k.id)).toEqual(seen);
    });

    it("revoked owner keys are listed only with include_revoked", async () => {
      const k = await ownerKey(h, ["tenants:read"]);
      await client().revokeOwnerKey({ keyId: k.key.id }, owner());
      const active = await client().listOwnerKeys({ pageSize: 100 }, owner());
      expect(active.keys.map((x) => x.id)).not.toContain(k.key.id);
      const all = await client().listOwnerKeys({ pageSize: 100, includeRevoked: true }, owner());
      expect(all.keys.find((x) => x.id === k.key.id)?.state).toBe(Key_State.REVOKED);
    });

    it("tenant keys are never listed as owner keys", async () => {
      const t = await bareTenant(h);
      const { key } = await tenantKey(h, t.id);
      const all = await client().listOwnerKeys({ pageSize: 100, includeRevoked: true }, owner());
      expect(all.keys.map((x) => x.id)).not.toContain(key.id);
    });
  });

  describe("OK / UNAUTHENTICATED: RevokeOwnerKey", () => {
    it("a revoked owner key is refused at once with KEY_REVOKED, though it was cached", async () => {
      const k = await ownerKey(h, ["tenants:read"]);
      const tenants = h.client(TenantService, protocol);
      await tenants.listTenants({ pageSize: 1 }, h.as(k.apiKey));
      const res = await client().revokeOwnerKey({ keyId: k.key.id }, owner());
      expect(res.key?.state).toBe(Key_State.REVOKED);
      expectNoSecret(res);
      await expectError(tenants.listTenants({ pageSize: 1 }, h.as(k.apiKey)), Code.Unauthenticated, "KEY_REVOKED");
    });

    it("revoking twice is STATE_CONFLICT", async () => {
      const k = await ownerKey(h, ["tenants:read"]);
      await client().revokeOwnerKey({ keyId: k.key.id }, owner());
      await expectError(
        client().revokeOwnerKey({ keyId: k.key.id }, owner()),
        Code.FailedPrecondition,
        "STATE_CONFLICT",
      );
    });
  });

  describe("NOT_FOUND", () => {
    it("a tenant key's id, a garbage id or an unknown id is KEY_NOT_FOUND; the tenant key keeps working", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      for (const keyId of [key.id, "garbage", "key_0000000000000000"]) {
        await expectError(client().revokeOwnerKey({ keyId }, owner()), Code.NotFound, "KEY_NOT_FOUND");
      }
      await client().listKeys({}, h.as(apiKey));
    });

    it("an owner key cannot be revoked through a tenant's RevokeKey", async () => {
      const t = await bareTenant(h);
      const k = await ownerKey(h, ["tenants:read"]);
      await expectError(
        client().revokeKey({ tenantId: t.id, keyId: k.key.id }, owner()),
        Code.NotFound,
        "KEY_NOT_FOUND",
      );
      await h.client(TenantService, protocol).listTenants({ pageSize: 1 }, h.as(k.apiKey));
    });
  });
});

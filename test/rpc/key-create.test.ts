// KeyService.CreateKey: the secret is shown once, the environment follows the tenant, permissions
// default to everything and never exceed the caller's, and both routes (owner naming the tenant,
// tenant key on its own tenant) resolve the tenant the same way.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Key_Environment, Key_Kind, Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { Tenant_Environment } from "../../gen/tenantd/v1/tenant_pb.js";
import { newId } from "../../src/domain/ids.js";
import { parseKey } from "../../src/domain/key-format.js";
import { TENANT_PERMISSIONS } from "../../src/domain/permissions.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import {
  bareTenant,
  expectFieldError,
  expectNoSecret,
  jsonOf,
  probeTenantKey,
  SECRET_RE,
  tenantKey,
} from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const sorted = (a: readonly string[]) => [...a].sort();

describe.each(PROTOCOLS)("CreateKey over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const owner = () => h.as(h.ownerKey);

  describe("OK: the secret is returned once", () => {
    it("returns a well-formed, working key whose record names it only by prefix and last four", async () => {
      const t = await bareTenant(h);
      const res = await keys().createKey({ tenantId: t.id, label: "ci deploy" }, owner());
      const key = res.key;
      const kid = key?.id.slice("key_".length) ?? "";
      expect(parseKey(res.apiKey)).toEqual({ kind: "tenant", env: "test", kid });
      expect(res.apiKey).toMatch(SECRET_RE);
      expect(key).toMatchObject({
        id: `key_${kid}`,
        tenantId: t.id,
        label: "ci deploy",
        kind: Key_Kind.TENANT,
        environment: Key_Environment.TEST,
        state: Key_State.ACTIVE,
        prefix: `tdk_tenant_test_${kid}_`,
        lastFour: res.apiKey.slice(-4),
      });
      expect(res.apiKey.startsWith(key?.prefix ?? "?")).toBe(true);
      // The public record itself carries no secret, only the response's api_key field does.
      expectNoSecret(key);
      await probeTenantKey(h, protocol, res.apiKey);
    });

    it("no read of the key (GetKey, ListKeys, RevokeKey's answer) ever contains a secret", async () => {
      const t = await bareTenant(h);
      const created = await keys().createKey({ tenantId: t.id, label: "shown once" }, owner());
      expect(jsonOf(created)).toMatch(SECRET_RE); // the check below can fail: the regex finds secrets
      const keyId = created.key?.id ?? "";
      const asTenant = h.as(created.apiKey);
      const reads = [
        await keys().getKey({ tenantId: t.id, keyId }, owner()),
        await keys().getKey({ keyId }, asTenant),
        await keys().listKeys({ tenantId: t.id }, owner()),
        await keys().listKeys({}, asTenant),
        await keys().listKeys({ tenantId: t.id, includeRevoked: true }, owner()),
      ];
      expectNoSecret(...reads);
      const revoked = await keys().revokeKey({ tenantId: t.id, keyId }, owner());
      const after = await keys().listKeys({ tenantId: t.id, includeRevoked: true }, owner());
      expectNoSecret(revoked, after);
      expect(after.keys.map((k) => k.id)).toEqual([keyId]);
    });
  });

  describe("OK: the environment follows the tenant", () => {
    it("a sandbox tenant gets test keys", async () => {
      const t = await bareTenant(h, Tenant_Environment.SANDBOX);
      const { apiKey, key } = await tenantKey(h, t.id);
      expect(apiKey.startsWith("tdk_tenant_test_")).toBe(true);
      expect(key.environment).toBe(Key_Environment.TEST);
    });

    it("a live tenant gets live keys", async () => {
      const t = await bareTenant(h, Tenant_Environment.LIVE);
      const res = await keys().createKey({ tenantId: t.id, label: "live" }, owner());
      expect(res.apiKey.startsWith("tdk_tenant_live_")).toBe(true);
      expect(res.key?.prefix.startsWith("tdk_tenant_live_")).toBe(true);
      expect(res.key?.environment).toBe(Key_Environment.LIVE);
      await probeTenantKey(h, protocol, res.apiKey);
    });
  });

  describe("OK: permissions", () => {
    it("without a list, the key gets every tenant permission", async () => {
      const t = await bareTenant(h);
      const res = await keys().createKey({ tenantId: t.id, label: "all" }, owner());
      expect(sorted(res.key?.permissions ?? [])).toEqual(sorted(TENANT_PERMISSIONS));
    });

    it("an explicit narrow list is granted exactly, and the key can do only that", async () => {
      const t = await bareTenant(h);
      const res = await keys().createKey({ tenantId: t.id, label: "ro", permissions: ["keys:read"] }, owner());
      expect(res.key?.permissions).toEqual(["keys:read"]);
      await probeTenantKey(h, protocol, res.apiKey);
      await expectError(
        keys().createKey({ label: "more" }, h.as(res.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });

    it("a tenant key without a list grants only what it holds itself", async () => {
      const t = await bareTenant(h);
      const caller = await tenantKey(h, t.id, { permissions: ["keys:read", "keys:write", "tenant:read"] });
      const res = await keys().createKey({ label: "child" }, h.as(caller.apiKey));
      expect(sorted(res.key?.permissions ?? [])).toEqual(["keys:read", "keys:write", "tenant:read"]);
    });

    it("a tenant key holding the permissions it grants may grant them", async () => {
      const t = await bareTenant(h);
      const caller = await tenantKey(h, t.id, { permissions: ["keys:write", "config:read"] });
      const res = await keys().createKey({ label: "child", permissions: ["config:read"] }, h.as(caller.apiKey));
      expect(res.key?.permissions).toEqual(["config:read"]);
      expect(res.key?.tenantId).toBe(t.id);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("an unknown permission is FIELD_INVALID naming permissions[0]", async () => {
      const t = await bareTenant(h);
      await expectFieldError(
        keys().createKey({ tenantId: t.id, label: "x", permissions: ["keys:fly"] }, owner()),
        Code.InvalidArgument,
        ["permissions[0]"],
      );
    });

    it("an owner-only permission on a tenant key is FIELD_INVALID naming its index", async () => {
      const t = await bareTenant(h);
      await expectFieldError(
        keys().createKey({ tenantId: t.id, label: "x", permissions: ["keys:read", "tenants:read"] }, owner()),
        Code.InvalidArgument,
        ["permissions[1]"],
      );
    });

    it("a repeated permission is FIELD_INVALID", async () => {
      const t = await bareTenant(h);
      await expectFieldError(
        keys().createKey({ tenantId: t.id, label: "x", permissions: ["keys:read", "keys:read"] }, owner()),
        Code.InvalidArgument,
        ["permissions"],
      );
    });

    it("an expire_time in the past, or exactly now, is FIELD_INVALID", async () => {
      const t = await bareTenant(h);
      for (const ms of [h.clock.now() - 1000, h.clock.now()]) {
        await expectFieldError(
          keys().createKey({ tenantId: t.id, label: "x", expireTime: timestampFromMs(ms) }, owner()),
          Code.InvalidArgument,
          ["expire_time"],
        );
      }
      const res = await keys().createKey(
        { tenantId: t.id, label: "x", expireTime: timestampFromMs(h.clock.now() + 1) },
        owner(),
      );
      expect(res.key?.expireTime).toEqual(timestampFromMs(h.clock.now() + 1));
    });

    it("an empty label is FIELD_INVALID", async () => {
      const t = await bareTenant(h);
      await expectFieldError(keys().createKey({ tenantId: t.id, label: "" }, owner()), Code.InvalidArgument, ["label"]);
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("a key with keys:write but without config:write cannot grant config:write", async () => {
      const t = await bareTenant(h);
      const caller = await tenantKey(h, t.id, { permissions: ["keys:read", "keys:write", "config:read"] });
      const err = await expectError(
        keys().createKey({ label: "escalate", permissions: ["config:read", "config:write"] }, h.as(caller.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      expect(err.rawMessage).toContain("config:write");
      const { keys: list } = await keys().listKeys({ tenantId: t.id }, owner());
      expect(list).toHaveLength(1); // nothing was created
    });

    it("a key without keys:write cannot create keys", async () => {
      const t = await bareTenant(h);
      const caller = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      await expectError(
        keys().createKey({ label: "x" }, h.as(caller.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });

    it("a tenant key sending x-tenant-id of another tenant is refused", async () => {
      const a = await bareTenant(h);
      const b = await bareTenant(h);
      const caller = await tenantKey(h, a.id);
      await expectError(
        keys().createKey({ label: "x" }, h.as(caller.apiKey, b.id)),
        Code.PermissionDenied,
        "ACT_AS_FORBIDDEN",
      );
    });
  });

  describe("OK: both routes resolve the tenant", () => {
    it("an owner names the tenant in tenant_id", async () => {
      const t = await bareTenant(h);
      const res = await keys().createKey({ tenantId: t.id, label: "by owner" }, owner());
      expect(res.key?.tenantId).toBe(t.id);
    });

    it("an owner names the tenant with x-tenant-id and an empty tenant_id", async () => {
      const t = await bareTenant(h);
      const res = await keys().createKey({ label: "acting as" }, h.as(h.ownerKey, t.id));
      expect(res.key?.tenantId).toBe(t.id);
      await probeTenantKey(h, protocol, res.apiKey);
    });

    it("a tenant key with an empty tenant_id, or its own id, creates in its own tenant", async () => {
      const t = await bareTenant(h);
      const caller = await tenantKey(h, t.id);
      const a = await keys().createKey({ label: "implicit" }, h.as(caller.apiKey));
      const b = await keys().createKey({ tenantId: t.id, label: "explicit" }, h.as(caller.apiKey));
      expect([a.key?.tenantId, b.key?.tenantId]).toEqual([t.id, t.id]);
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("an owner with neither tenant_id nor x-tenant-id is TENANT_CONTEXT_REQUIRED", async () => {
      await expectError(
        keys().createKey({ label: "where?" }, owner()),
        Code.FailedPrecondition,
        "TENANT_CONTEXT_REQUIRED",
      );
    });
  });

  describe("NOT_FOUND across tenants", () => {
    it("an owner acting as tenant A reaches only A: B's id answers TENANT_NOT_FOUND", async () => {
      const a = await bareTenant(h);
      const b = await bareTenant(h);
      await expectError(
        keys().createKey({ tenantId: b.id, label: "x" }, h.as(h.ownerKey, a.id)),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
      const own = await keys().createKey({ tenantId: a.id, label: "same tenant" }, h.as(h.ownerKey, a.id));
      expect(own.key?.tenantId).toBe(a.id);
    });

    it("a tenant key naming another tenant's id is TENANT_NOT_FOUND, as for a tenant that does not exist", async () => {
      const a = await bareTenant(h);
      const b = await bareTenant(h);
      const caller = await tenantKey(h, a.id);
      const other = await expectError(
        keys().createKey({ tenantId: b.id, label: "x" }, h.as(caller.apiKey)),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
      const missing = newId("ten");
      const none = await expectError(
        keys().createKey({ tenantId: missing, label: "x" }, h.as(caller.apiKey)),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
      // Same shape of answer either way: nothing tells the tenants apart.
      expect(other.rawMessage.replace(b.id, "ID")).toBe(none.rawMessage.replace(missing, "ID"));
      const { keys: list } = await keys().listKeys({ tenantId: b.id }, owner());
      expect(list).toHaveLength(0);
    });

    it("an owner naming a tenant that does not exist, or a malformed id, is TENANT_NOT_FOUND", async () => {
      await expectError(
        keys().createKey({ tenantId: newId("ten"), label: "x" }, owner()),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
      await expectError(
        keys().createKey({ tenantId: "ten_nope", label: "x" }, owner()),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("no key is KEY_MISSING and a malformed key is KEY_INVALID", async () => {
      await expectError(keys().createKey({ label: "x" }), Code.Unauthenticated, "KEY_MISSING");
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id);
      const typo = `${apiKey.slice(0, -1)}${apiKey.endsWith("A") ? "B" : "A"}`;
      await expectError(keys().createKey({ label: "x" }, h.as(typo)), Code.Unauthenticated, "KEY_INVALID");
    });
  });
});

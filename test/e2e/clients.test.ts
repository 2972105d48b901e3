// Real, independent clients against a real `tenantd` process (`node --import tsx src/main.ts`):
// buf curl (gRPC through server reflection), Debian's python3-grpcio with stubs generated at test
// time, and curl speaking Connect JSON over HTTP/1.1. Then a graceful SIGTERM and a second start
// on the same data (lock released, no new owner key).
//
// Backends: the embedded PGlite in a fresh temp folder, or, when DATABASE_URL / REDIS_URL are
// set, a fresh database created on that Postgres server (dropped afterwards) and that Redis.
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";

/** Parsed JSON printed by the tools under test; its shape is what the assertions check. */
// biome-ignore lint/suspicious/noExplicitAny: foreign JSON, checked field by field by expect
type Json = any;

const ROOT = resolve(import.meta.dirname, "../..");
const BUF = join(ROOT, "node_modules/.bin/buf");
const PYTHON = "/usr/bin/python3";
const START_TIMEOUT_MS = 90_000;

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with a bounded time; never throws on a non-zero exit. */
function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string } = {}) {
  return new Promise<Run>((res) => {
    const child = execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? ROOT, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        res({ code, stdout, stderr: err && code === -1 ? `${stderr}\n${err.message}` : stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** A tenantd child process with its output captured. */
class Tenantd {
  readonly child: ChildProcess;
  out = "";
  exited: Promise<number | null>;

  constructor(env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (d: Buffer) => {
      this.out += d.toString();
    });
    this.child.stderr?.on("data", (d: Buffer) => {
      this.out += d.toString();
    });
    this.exited = new Promise((res) => this.child.once("exit", (code) => res(code)));
  }

  tail(): string {
    return this.out.slice(-3000);
  }

  /** Waits until /readyz answers 200, or fails with the process output. */
  async ready(baseUrl: string): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exitCode: number | null | undefined;
    void this.exited.then((c) => {
      exitCode = c;
    });
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw new Error(`tenantd exited with ${exitCode} during start:\n${this.tail()}`);
      try {
        const r = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`tenantd was not ready within ${START_TIMEOUT_MS} ms:\n${this.tail()}`);
  }

  /** SIGTERM, then the exit code (null if it did not exit within `ms`). */
  async stop(ms: number): Promise<number | null | "timeout"> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill("SIGTERM");
    return Promise.race([this.exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), ms))]);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

const serverUrl = process.env.DATABASE_URL || undefined;
const redisUrl = process.env.REDIS_URL || undefined;
let tmp: string;
let dbName: string | undefined;
let env: NodeJS.ProcessEnv;
let port: number;
let base: string;
let ownerKeyFile: string;
let ownerKey: string;
let server: Tenantd | undefined;
const spawned: Tenantd[] = [];

async function withAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: serverUrl });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), "tenantd-e2e-"));
  ownerKeyFile = join(tmp, "owner.key");
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  env = { ...process.env, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "info" };
  env.TENANTD_DATA_DIR = join(tmp, "data");
  env.TENANTD_OWNER_KEY_FILE = ownerKeyFile;
  env.TENANTD_SHUTDOWN_GRACE_MS = "3000";
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  delete env.NODE_OPTIONS;
  if (serverUrl) {
    dbName = `tenantd_e2e_${randomBytes(6).toString("hex")}`;
    await withAdmin((c) => c.query(`create database "${dbName}"`));
    const u = new URL(serverUrl);
    u.pathname = `/${dbName}`;
    env.DATABASE_URL = u.toString();
  }
  if (redisUrl) env.REDIS_URL = redisUrl;
  server = new Tenantd(env);
  spawned.push(server);
  await server.ready(base);
  ownerKey = readFileSync(ownerKeyFile, "utf8").trim();
}, START_TIMEOUT_MS + 30_000);

afterAll(async () => {
  for (const s of spawned) {
    if ((await s.stop(5000)) === "timeout") s.kill();
  }
  if (dbName) {
    await withAdmin((c) => c.query(`drop database if exists "${dbName}" with (force)`)).catch(() => undefined);
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 30_000);

it("writes the bootstrap owner key to TENANTD_OWNER_KEY_FILE with mode 0600, not to the output", () => {
  expect(statSync(ownerKeyFile).mode & 0o777).toBe(0o600);
  expect(ownerKey).toMatch(/^tdk_owner_live_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}$/);
  expect(server?.out).toContain(ownerKeyFile);
  expect(server?.out).not.toContain(ownerKey);
});

// ---------------------------------------------------------------------------------------------
// (a) buf curl through server reflection

const bufCurl = (path: string, opts: { key?: string; body?: unknown } = {}) =>
  run(BUF, [
    "curl",
    "--protocol",
    "grpc",
    "--http2-prior-knowledge",
    "--connect-timeout",
    "10",
    ...(opts.key ? ["-H", `authorization: Bearer ${opts.key}`] : []),
    ...(opts.body !== undefined ? ["-d", JSON.stringify(opts.body)] : []),
    `${base}/${path}`,
  ]);

function json(r: Run): Json {
  if (r.code !== 0) throw new Error(`buf curl failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Json;
}

/** buf curl's error output: the status JSON, with the ErrorInfo detail decoded. */
function bufError(r: Run): { code: string; reason: string; domain: string } {
  expect(r.code, `expected buf curl to fail:\n${r.stdout}`).not.toBe(0);
  const start = r.stderr.indexOf("{");
  expect(start, `no status JSON in buf curl's output:\n${r.stderr}`).toBeGreaterThanOrEqual(0);
  const status = JSON.parse(r.stderr.slice(start)) as {
    code: string;
    details?: Array<{ type: string; value: string; debug?: { reason?: string; domain?: string } }>;
  };
  const info = status.details?.find((d) => d.type === "google.rpc.ErrorInfo");
  expect(info, `no ErrorInfo in:\n${r.stderr}`).toBeDefined();
  // buf curl prints details it cannot resolve as base64; decode the ErrorInfo ourselves.
  const decoded = info?.debug ?? fromBinary(ErrorInfoSchema, Buffer.from(info?.value ?? "", "base64"));
  return { code: status.code, reason: decoded.reason ?? "", domain: decoded.domain ?? "" };
}

describe("buf curl (gRPC, reflection)", () => {
  it("lists the five tenantd services, health and reflection", async () => {
    const r = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", base, "--list-services"]);
    expect(r.code, r.stderr).toBe(0);
    const services = r.stdout.trim().split("\n").sort();
    expect(services).toEqual(
      expect.arrayContaining([
        "tenantd.v1.TenantService",
        "tenantd.v1.KeyService",
        "tenantd.v1.ConfigService",
        "tenantd.v1.LimitService",
        "tenantd.v1.UsageService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]),
    );
  });

  it("owner creates a tenant and keys; the tenant key reads it; revoked and suspended keys are refused", async () => {
    const tenant = json(
      await bufCurl("tenantd.v1.TenantService/CreateTenant", {
        key: ownerKey,
        body: { name: "Buf Curl Co", email: "ops@example.com" },
      }),
    ).tenant as { id: string; status: string };
    expect(tenant.id).toMatch(/^ten_/);
    expect(tenant.status).toBe("ACTIVE");
    const mk = async (label: string) =>
      json(
        await bufCurl("tenantd.v1.KeyService/CreateKey", {
          key: ownerKey,
          body: { tenantId: tenant.id, label },
        }),
      ) as { apiKey: string; key: { id: string } };
    const k1 = await mk("reader");
    const k2 = await mk("to revoke");
    expect(k1.apiKey).toMatch(/^tdk_tenant_/);

    const cur = json(await bufCurl("tenantd.v1.TenantService/GetCurrentTenant", { key: k1.apiKey }));
    expect(cur.tenant.id).toBe(tenant.id);

    json(
      await bufCurl("tenantd.v1.KeyService/RevokeKey", {
        key: ownerKey,
        body: { tenantId: tenant.id, keyId: k2.key.id },
      }),
    );
    expect(bufError(await bufCurl("tenantd.v1.TenantService/GetCurrentTenant", { key: k2.apiKey }))).toEqual({
      code: "unauthenticated",
      reason: "KEY_REVOKED",
      domain: "tenantd",
    });

    const suspended = json(
      await bufCurl("tenantd.v1.TenantService/UpdateTenant", {
        key: ownerKey,
        body: { tenantId: tenant.id, status: "SUSPENDED" },
      }),
    );
    expect(suspended.tenant.status).toBe("SUSPENDED");
    expect(bufError(await bufCurl("tenantd.v1.TenantService/GetCurrentTenant", { key: k1.apiKey }))).toEqual({
      code: "permission_denied",
      reason: "TENANT_SUSPENDED",
      domain: "tenantd",
    });
  });
});

// ---------------------------------------------------------------------------------------------
// (b) Debian's python3-grpcio with stubs generated at test time

const PY_CHECK = spawnSync(PYTHON, ["-c", "import grpc, grpc_tools.protoc, google.protobuf"], { encoding: "utf8" });
const PY_MISSING = existsSync(PYTHON)
  ? PY_CHECK.status === 0
    ? ""
    : `import grpc failed: ${(PY_CHECK.stderr || "").trim().split("\n").pop()}`
  : `${PYTHON} not found`;

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".proto")) out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const PY_CLIENT = `
import json, sys
out, port, owner_key = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, out)
import grpc
from google.rpc import status_pb2, error_details_pb2
from tenantd.v1 import key_service_pb2 as ks, key_service_pb2_grpc as ksg
from tenantd.v1 import tenant_service_pb2 as ts, tenant_service_pb2_grpc as tsg

channel = grpc.insecure_channel("127.0.0.1:" + port)
grpc.channel_ready_future(channel).result(timeout=10)
tenants = tsg.TenantServiceStub(channel)
keys = ksg.KeyServiceStub(channel)
owner = (("authorization", "Bearer " + owner_key),)

t = tenants.CreateTenant(ts.CreateTenantRequest(name="Python Co", email="py@example.com"), metadata=owner, timeout=10).tenant
k = keys.CreateKey(ks.CreateKeyRequest(tenant_id=t.id, label="python"), metadata=owner, timeout=10)
as_tenant = (("authorization", "Bearer " + k.api_key),)
current = tenants.GetCurrentTenant(ts.GetCurrentTenantRequest(), metadata=as_tenant, timeout=10).tenant
keys.RevokeKey(ks.RevokeKeyRequest(tenant_id=t.id, key_id=k.key.id), metadata=owner, timeout=10)

result = {"tenant_id": t.id, "key_prefix": k.api_key[:11], "current_id": current.id}
try:
    tenants.GetCurrentTenant(ts.GetCurrentTenantRequest(), metadata=as_tenant, timeout=10)
    result["error"] = None
except grpc.RpcError as e:
    trailers = dict(e.trailing_metadata() or ())
    raw = trailers.get("grpc-status-details-bin")
    status = status_pb2.Status.FromString(raw) if raw else None
    reason = domain = None
    for d in (status.details if status else []):
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason, domain = info.reason, info.domain
    result["error"] = {
        "code": e.code().name,
        "status_code": status.code if status else None,
        "reason": reason,
        "domain": domain,
        "has_request_id": "x-request-id" in trailers or any(k == "x-request-id" for k, _ in (e.initial_metadata() or ())),
    }
print(json.dumps(result))
`;

describe("python3-grpcio (Debian) with stubs generated by grpc_tools.protoc", () => {
  it(`creates a tenant and a key, reads the current tenant, and reads ErrorInfo from grpc-status-details-bin${PY_MISSING ? ` — skipped: ${PY_MISSING}` : ""}`, async (ctx) => {
    if (PY_MISSING) ctx.skip(PY_MISSING);
    if (!existsSync(join(ROOT, ".proto-deps/buf/validate/validate.proto"))) {
      const deps = await run("npm", ["run", "proto:deps"], { timeoutMs: 60_000 });
      expect(deps.code, deps.stderr).toBe(0);
    }
    const out = join(tmp, "py");
    const files = [...protoFiles(join(ROOT, "proto")), ...protoFiles(join(ROOT, ".proto-deps"))];
    const protoc = (args: string[]) =>
      run(
        PYTHON,
        [
          "-c",
          "import sys\nfrom grpc_tools import protoc\nsys.exit(protoc.main(['protoc'] + sys.argv[1:]))",
          `--python_out=${out}`,
          `--grpc_python_out=${out}`,
          ...args,
        ],
        { timeoutMs: 60_000 },
      );
    rmSync(out, { recursive: true, force: true });
    spawnSync("mkdir", ["-p", out]);
    // Straight from the sources first. Debian's grpc_tools bundles protoc 3.5, which predates
    // proto3 `optional`: it refuses the files, so fall back to a descriptor set built by buf from
    // the same sources (protoc then only generates code; presence survives as one-field oneofs).
    const grpcToolsInclude = spawnSync(
      PYTHON,
      ["-c", "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))"],
      { encoding: "utf8" },
    ).stdout.trim();
    const direct = await protoc([
      `-I${join(ROOT, "proto")}`,
      `-I${join(ROOT, ".proto-deps")}`,
      `-I${grpcToolsInclude}`,
      ...files,
    ]);
    if (direct.code !== 0) {
      expect(direct.stderr).toMatch(/optional/i);
      const set = join(tmp, "tenantd.binpb");
      const built = await run(BUF, ["build", "-o", set, "--as-file-descriptor-set"], { timeoutMs: 60_000 });
      expect(built.code, built.stderr).toBe(0);
      rmSync(out, { recursive: true, force: true });
      spawnSync("mkdir", ["-p", out]);
      const gen = await protoc([`--descriptor_set_in=${set}`, ...files]);
      expect(gen.code, gen.stderr).toBe(0);
    }
    for (const f of [
      "tenantd/v1/tenant_service_pb2_grpc.py",
      "tenantd/v1/key_service_pb2.py",
      "google/rpc/status_pb2.py",
      "google/rpc/error_details_pb2.py",
      "google/api/annotations_pb2.py",
      "buf/validate/validate_pb2.py",
    ]) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const script = join(tmp, "client.py");
    writeFileSync(script, PY_CLIENT);
    const r = await run(PYTHON, [script, out, String(port), ownerKey], { timeoutMs: 60_000 });
    expect(r.code, `python client failed:\n${r.stderr}\n${server?.tail()}`).toBe(0);
    const res = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as Json;
    expect(res.tenant_id).toMatch(/^ten_/);
    expect(res.current_id).toBe(res.tenant_id);
    expect(res.key_prefix).toBe("tdk_tenant_");
    expect(res.error).toMatchObject({
      code: "UNAUTHENTICATED",
      status_code: 16,
      reason: "KEY_REVOKED",
      domain: "tenantd",
      has_request_id: true,
    });
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------
// (c) curl, Connect JSON over HTTP/1.1

describe("curl (Connect JSON over HTTP/1.1)", () => {
  const curl = (path: string, body: unknown, key?: string) =>
    run("curl", [
      "-sS",
      "--http1.1",
      "--max-time",
      "15",
      "-i",
      "-X",
      "POST",
      "-H",
      "content-type: application/json",
      ...(key ? ["-H", `authorization: Bearer ${key}`] : []),
      "--data",
      JSON.stringify(body),
      `${base}/${path}`,
    ]);
  const parse = (r: Run) => {
    expect(r.code, r.stderr).toBe(0);
    const [head = "", ...rest] = r.stdout.split("\r\n\r\n");
    const lines = head.split("\r\n");
    const status = Number(lines[0]?.split(" ")[1]);
    const headers = Object.fromEntries(
      lines.slice(1).map((l) => {
        const i = l.indexOf(":");
        return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
      }),
    );
    return { status, http: lines[0] ?? "", headers, body: JSON.parse(rest.join("\r\n\r\n")) as Json };
  };

  it("CreateTenant answers 200 with the tenant", async () => {
    const r = parse(
      await curl("tenantd.v1.TenantService/CreateTenant", { name: "Curl Co", email: "curl@example.com" }, ownerKey),
    );
    expect(r.http).toMatch(/^HTTP\/1\.1 200/);
    expect(r.body.tenant.id).toMatch(/^ten_/);
    expect(r.body.tenant.status).toBe("ACTIVE");
    expect(r.headers["x-request-id"]).toBeTruthy();
  });

  it("an error carries the Connect error JSON, its ErrorInfo and an x-request-id header", async () => {
    const r = parse(await curl("tenantd.v1.TenantService/GetCurrentTenant", {}));
    expect(r.status).toBe(401);
    expect(r.headers["x-request-id"]).toMatch(/\S/);
    expect(r.body.code).toBe("unauthenticated");
    const info = (r.body.details as Array<{ type: string; value: string; debug?: { reason: string } }>).find(
      (d) => d.type === "google.rpc.ErrorInfo",
    );
    const reason = info?.debug?.reason ?? fromBinary(ErrorInfoSchema, Buffer.from(info?.value ?? "", "base64")).reason;
    expect(reason).toBe("KEY_MISSING");
    // A malformed key: refused before any lookup, with a request id as well.
    const other = parse(
      await curl("tenantd.v1.TenantService/ListTenants", {}, "tdk_tenant_live_0000000000000000_0000"),
    );
    expect(other.status).toBe(401);
    expect(other.headers["x-request-id"]).toMatch(/\S/);
  });
});

// ---------------------------------------------------------------------------------------------
// (d) graceful SIGTERM and a second start on the same data

describe("shutdown and restart", () => {
  it(
    "exits 0 on SIGTERM within a few seconds; a second start works and prints no new owner key",
    async () => {
      const first = server as Tenantd;
      const t0 = Date.now();
      const code = await first.stop(8000);
      expect(code, `tenantd did not exit 0 after SIGTERM:\n${first.tail()}`).toBe(0);
      expect(Date.now() - t0).toBeLessThan(8000);
      if (!serverUrl) expect(existsSync(join(tmp, "data"))).toBe(true);

      const keyFileBefore = readFileSync(ownerKeyFile, "utf8");
      const second = new Tenantd(env);
      spawned.push(second);
      server = second;
      await second.ready(base);
      expect(second.out).not.toMatch(/created the owner key|owner key was created/i);
      expect(second.out).not.toMatch(/tdk_owner_/);
      expect(readFileSync(ownerKeyFile, "utf8")).toBe(keyFileBefore);
      // The old owner key still works against the restarted process, and the data survived.
      const list = json(await bufCurl("tenantd.v1.TenantService/ListTenants", { key: ownerKey, body: {} }));
      const names = (list.tenants as Array<{ name: string }>).map((t) => t.name);
      expect(names).toEqual(expect.arrayContaining(["Buf Curl Co", "Curl Co"]));
      const code2 = await second.stop(8000);
      expect(code2, second.tail()).toBe(0);
    },
    START_TIMEOUT_MS + 30_000,
  );
});

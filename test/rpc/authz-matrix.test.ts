// The authorization matrix: every RPC of the five tenantd services × every kind of caller × every
// RPC protocol, with the expected outcome computed from the RPC's `(tenantd.v1.access)` option
// (never from a hand-written table), so a new RPC is covered the day it is declared. The callers,
// their expectations and the runner live in test/helpers/principals.ts, shared with the REST
// column (test/rest/authz-matrix-rest.test.ts).
//
// Each RPC is called with its empty request. An expected refusal must match code and ErrorInfo
// reason exactly; "passes auth" means the answer is not one of the auth reasons (it may be OK, a
// validation error, NOT_FOUND, or UNIMPLEMENTED NOT_IMPLEMENTED for a pending service).
//
// Destructive RPCs (an empty DeleteCurrentTenant deletes the caller's tenant) run after all the
// others, and every cell of theirs that is expected to pass auth gets its own fresh caller.
import { create } from "@bufbuild/protobuf";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { TENANTD_SERVICES } from "../../src/app.js";
import { accessOf } from "../../src/transport/access.js";
import { type Harness, PROTOCOLS, type Protocol, startHarness } from "../helpers/app.js";
import {
  AUTH_REASONS,
  buildPrincipals,
  type Cell,
  DESTRUCTIVE,
  type HomeTenant,
  mismatchTable,
  type Outcome,
  type Principal,
  runMatrix,
} from "../helpers/principals.js";

let h: Harness;
let home: HomeTenant;
let principals: Principal[] = [];
const OPTS = { timeoutMs: 15_000 };

beforeAll(async () => {
  h = await startHarness();
  ({ principals, home } = await buildPrincipals(h));
}, 120_000);

afterAll(async () => {
  await h?.close();
});

async function call(cell: Cell, opts: CallOptions): Promise<Outcome> {
  const client = h.client(cell.service, cell.protocol as Protocol) as unknown as Record<
    string,
    (req: unknown, o: CallOptions) => Promise<unknown> | AsyncIterable<unknown>
  >;
  const fn = client[cell.method.localName];
  if (!fn) throw new Error(`no client method ${cell.method.localName}`);
  try {
    const res = fn(create(cell.method.input), { ...OPTS, ...opts });
    if (cell.method.methodKind === "server_streaming") {
      for await (const _ of res as AsyncIterable<unknown>) {
        // drain
      }
    } else {
      await res;
    }
    return { code: "OK", reason: "" };
  } catch (e) {
    const err = ConnectError.from(e);
    const info = err.findDetails(ErrorInfoSchema)[0];
    return { code: Code[err.code], reason: info?.domain === "tenantd" ? info.reason : `(no ErrorInfo) ${err.message}` };
  }
}

it("every RPC × caller × protocol answers what its (access) option says", async () => {
  const cells: Cell[] = [];
  for (const service of TENANTD_SERVICES) {
    for (const method of service.methods) {
      const access = accessOf(method);
      expect(access, `${service.typeName}/${method.name} has no access option`).not.toBeNull();
      if (!access) continue;
      for (const principal of principals) {
        for (const protocol of PROTOCOLS) {
          cells.push({
            service,
            method,
            access,
            principal,
            protocol,
            expected: principal.expect(access),
            destructive: DESTRUCTIVE.has(`${service.typeName}/${method.name}`),
          });
        }
      }
    }
  }
  const rpcCount = TENANTD_SERVICES.reduce((n, s) => n + s.methods.length, 0);
  expect(cells.length).toBe(rpcCount * principals.length * PROTOCOLS.length);

  const { mismatches, tally, ms } = await runMatrix(cells, call);
  // The shared home tenant is still there: no destructive call reached it.
  const still = await h.client(TenantService).getTenant({ tenantId: home.id }, h.as(h.ownerKey));
  expect(still.tenant?.id).toBe(home.id);

  if (mismatches.length > 0) {
    console.error(
      `authorization matrix: ${mismatches.length} mismatches of ${cells.length} cells\n${mismatchTable(mismatches)}`,
    );
  }
  console.info(
    `authorization matrix: ${rpcCount} RPCs × ${principals.length} callers × ${PROTOCOLS.length} protocols = ${cells.length} cells, ${mismatches.length} mismatches, ${ms} ms`,
  );
  console.info(`outcomes: ${[...tally].map(([k, n]) => `${k}=${n}`).join(" ")}`);
  expect(mismatches.length).toBe(0);
  // The matrix exercised every refusal it expects, and real successes too.
  for (const r of AUTH_REASONS) expect(tally.get(r) ?? 0, r).toBeGreaterThan(0);
  expect(tally.get("OK") ?? 0).toBeGreaterThan(0);
}, 120_000);

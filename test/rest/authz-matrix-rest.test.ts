// The REST column of the authorization matrix (test/rpc/authz-matrix.test.ts has gRPC, Connect and
// gRPC-Web): every route of every RPC's google.api.http rule — the primary binding and each
// additional one, since each is a separate way in — × every caller of test/helpers/principals.ts,
// called with plain fetch and held to the same expectations, computed from the RPC's access option.
//
// Each RPC is called with its empty request, except that path variables need a value to make a
// route at all: they get ids that name nothing (a well-formed unknown tenant, key or reservation),
// so that no call reaches a real resource and the auth outcome is what is compared. On top of
// the RPC matrix's rule, a REST answer must also (a) carry the HTTP status api.md maps its code
// to, and (b) come from the RPC itself: a transcoder refusal (no route, 405, REQUEST_MALFORMED)
// means the test built a wrong route or the transcoder broke one, never "passes auth".
import { type CallOptions, Code } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { TENANTD_SERVICES } from "../../src/app.js";
import { newId } from "../../src/domain/ids.js";
import { generateKey, keyIdOf } from "../../src/domain/key-format.js";
import { accessOf } from "../../src/transport/access.js";
import { type Harness, startHarness } from "../helpers/app.js";
import {
  AUTH_REASONS,
  buildPrincipals,
  type Cell,
  DESTRUCTIVE,
  type HomeTenant,
  matchesExpected,
  mismatchTable,
  type Outcome,
  type Principal,
  runMatrix,
} from "../helpers/principals.js";
import {
  errorInfoOf,
  expectedHttpStatus,
  isStatusJson,
  type RestRoute,
  restFetch,
  restRequestFor,
  restRoutes,
} from "../helpers/rest.js";

let h: Harness;
let home: HomeTenant;
let principals: Principal[] = [];

beforeAll(async () => {
  h = await startHarness();
  ({ principals, home } = await buildPrincipals(h));
}, 120_000);

afterAll(async () => {
  await h?.close();
});

/** Values for path variables that name nothing, by the variable's field name. */
const PLACEHOLDERS: Record<string, () => string> = {
  tenant_id: () => newId("ten"),
  key_id: () => keyIdOf(generateKey("tenant", "test").kid),
  reservation_id: () => newId("rsv"),
  // Secret and role names: well-formed names that no tenant has.
  key: () => "matrix_unknown",
  name: () => "matrix-unknown",
};

/** Transcoder refusals: the call never reached the RPC. */
const TRANSCODER_REASONS = new Set(["REQUEST_MALFORMED", "ROUTE_NOT_FOUND", "REQUEST_TOO_LARGE"]);

interface RestCell extends Cell {
  routeIndex: number;
  route: RestRoute;
}

/** REST answers that are right for the RPC but wrong for HTTP, by cell. */
const httpProblems = new Map<Cell, string>();

async function call(cell: Cell, opts: CallOptions): Promise<Outcome> {
  const { route, routeIndex } = cell as RestCell;
  const init: Record<string, string> = {};
  for (const v of route.variables) {
    const make = PLACEHOLDERS[v];
    if (!make) throw new Error(`no placeholder for path variable ${v} of ${route.template}`);
    const f = cell.method.input.fields.find((x) => x.name === v);
    if (!f) throw new Error(`${cell.method.input.typeName} has no field ${v}`);
    init[f.localName] = make();
  }
  const headers = new Headers(opts.headers);
  const res = await restFetch(h.baseUrl, restRequestFor(cell.method, init, routeIndex), {
    headers: Object.fromEntries(headers),
  });
  if (res.status === 200) {
    if (isStatusJson(res.json)) httpProblems.set(cell, "200 with a google.rpc.Status body");
    return { code: "OK", reason: "" };
  }
  if (!isStatusJson(res.json)) {
    httpProblems.set(cell, `HTTP ${res.status} without a google.rpc.Status body`);
    return { code: Code[Code.Unknown], reason: `(no ErrorInfo) HTTP ${res.status}` };
  }
  const info = errorInfoOf(res.json);
  const reason = info?.domain === "tenantd" ? String(info.reason) : `(no ErrorInfo) ${res.json.message}`;
  const want = expectedHttpStatus(res.json.code as Code, info ? String(info.reason) : undefined);
  if (res.status !== want) httpProblems.set(cell, `HTTP ${res.status}, api.md maps it to ${want}`);
  if (res.status === 405) httpProblems.set(cell, `405, allow: ${res.headers.get("allow")}`);
  return { code: Code[res.json.code as Code] ?? String(res.json.code), reason };
}

function check(cell: Cell, got: Outcome): boolean {
  if (httpProblems.has(cell)) return false;
  if (TRANSCODER_REASONS.has(got.reason)) return false;
  return matchesExpected(cell.service, cell.expected, got);
}

it("every REST route × caller answers what the RPC's (access) option says, with api.md's HTTP status", async () => {
  const cells: RestCell[] = [];
  let routeCount = 0;
  let rpcCount = 0;
  for (const service of TENANTD_SERVICES) {
    for (const method of service.methods) {
      const access = accessOf(method);
      expect(access, `${service.typeName}/${method.name} has no access option`).not.toBeNull();
      const routes = restRoutes(method);
      // Every RPC of the contract has a REST face (api.md's route table).
      expect(routes.length, `${service.typeName}/${method.name} has no http rule`).toBeGreaterThan(0);
      if (!access) continue;
      rpcCount++;
      routeCount += routes.length;
      routes.forEach((route, routeIndex) => {
        for (const principal of principals) {
          cells.push({
            service,
            method,
            access,
            principal,
            protocol: `${route.httpMethod} ${route.template}`,
            expected: principal.expect(access),
            destructive: DESTRUCTIVE.has(`${service.typeName}/${method.name}`),
            route,
            routeIndex,
          });
        }
      });
    }
  }
  expect(cells.length).toBe(routeCount * principals.length);

  const { mismatches, tally, ms } = await runMatrix(cells, call, check);
  const still = await h.client(TenantService).getTenant({ tenantId: home.id }, h.as(h.ownerKey));
  expect(still.tenant?.id).toBe(home.id);

  if (mismatches.length > 0) {
    const problems = mismatches
      .map(({ cell }) => httpProblems.get(cell))
      .filter((p) => p !== undefined)
      .slice(0, 20);
    console.error(
      `REST authorization matrix: ${mismatches.length} mismatches of ${cells.length} cells\n${mismatchTable(mismatches)}${problems.length ? `\nHTTP: ${problems.join("\n      ")}` : ""}`,
    );
  }
  console.info(
    `REST authorization matrix: ${rpcCount} RPCs, ${routeCount} routes × ${principals.length} callers = ${cells.length} cells, ${mismatches.length} mismatches, ${ms} ms`,
  );
  console.info(`outcomes: ${[...tally].map(([k, n]) => `${k}=${n}`).join(" ")}`);
  expect(mismatches.length).toBe(0);
  for (const r of AUTH_REASONS) expect(tally.get(r) ?? 0, r).toBeGreaterThan(0);
  expect(tally.get("OK") ?? 0).toBeGreaterThan(0);
}, 120_000);

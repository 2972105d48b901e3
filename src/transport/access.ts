import { type DescMethod, type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import { type Access, Access_Audience, access } from "../../gen/tenantd/v1/options_pb.js";

// Reads the `(tenantd.v1.access)` option of an RPC once and caches it per method descriptor, so
// the per-call cost is one WeakMap lookup.

const cache = new WeakMap<DescMethod, Access | null>();

export function accessOf(method: DescMethod): Access | null {
  let a = cache.get(method);
  if (a === undefined) {
    a = hasOption(method, access) ? getOption(method, access) : null;
    cache.set(method, a);
  }
  return a;
}

/** Start-up check: every RPC of a tenantd service declares its access rule. */
export function assertAccessDeclared(services: DescService[]): void {
  for (const s of services) {
    for (const m of s.methods) {
      const a = accessOf(m);
      if (!a || a.audience === Access_Audience.AUDIENCE_UNSPECIFIED) {
        throw new Error(`${s.typeName}/${m.name} declares no (tenantd.v1.access) audience`);
      }
      if (a.audience !== Access_Audience.PUBLIC && a.permission === "") {
        throw new Error(`${s.typeName}/${m.name} declares no permission`);
      }
    }
  }
}

export { Access_Audience as Audience };

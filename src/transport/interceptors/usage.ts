import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { scopeKey } from "../../services/context.js";
import type { UsageMeter } from "../../services/usage/meter.js";

// Counts `api_calls`: one per call made with a tenant's key that got past authentication and the
// rate limit (placed after both), on any protocol, whatever the handler answers. Owner keys, also
// when acting on behalf of a tenant, are the platform's own traffic and are not counted. The count
// is an in-process map increment; the meter's batches reach Redis and Postgres in the background.

export function usageInterceptor(meter: UsageMeter, now: () => number): Interceptor {
  const names = new WeakMap<DescMethod, string>();
  return (next) => (req) => {
    const scope = req.contextValues.get(scopeKey);
    if (scope !== undefined && scope.tenantId !== null && scope.principal.key.kind === "tenant") {
      let name = names.get(req.method);
      if (name === undefined) {
        name = `${req.method.parent.typeName}/${req.method.name}`;
        names.set(req.method, name);
      }
      meter.countCall(scope.tenantId, scope.principal.keyId, name, now());
    }
    return next(req);
  };
}

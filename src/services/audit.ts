import type { Clock } from "../domain/clock.js";
import { newId } from "../domain/ids.js";
import type { AuditStore } from "../store/ports.js";
import type { CallScope } from "./context.js";

export interface AuditRecorder {
  /**
   * Appends an event to the tenant's audit trail with the actor of the call (and whether an
   * owner key acted on behalf of the tenant). A failure to write is reported to `onError` and
   * does not undo the change it describes.
   */
  record(
    scope: CallScope,
    tenantId: string,
    method: string,
    resource: string,
    details?: Record<string, string>,
  ): Promise<void>;
}

export function createAuditRecorder(deps: {
  audit: AuditStore;
  clock: Clock;
  onError: (err: unknown) => void;
}): AuditRecorder {
  return {
    async record(scope, tenantId, method, resource, details = {}) {
      const at = deps.clock.now();
      try {
        await deps.audit.append({
          id: newId("evt", at),
          tenantId,
          actorKeyId: scope.principal.keyId,
          actorKind: scope.principal.key.kind,
          actingAs: scope.actingAs || (scope.principal.key.kind === "owner" && scope.tenantId === null),
          method,
          resource,
          requestId: scope.requestId,
          createdAt: at,
          details,
        });
      } catch (err) {
        deps.onError(err);
      }
    },
  };
}

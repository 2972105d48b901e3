import { createContextKey } from "@connectrpc/connect";
import type { KeyRecord } from "../domain/types.js";

/** Who is calling, established by the auth interceptor from the bearer key. */
export interface Principal {
  key: KeyRecord;
  /** `key_<kid>`. */
  keyId: string;
  /** True when the caller used the previous secret of a rotated key, inside its grace period. */
  rotatedSecret: boolean;
}

/**
 * The scope of one call: the principal and the tenant the call acts on. For tenant keys the
 * tenant is the key's own; for owner keys it is the `x-tenant-id` tenant (acting on behalf), or
 * null when the owner acts on the collection.
 */
export interface CallScope {
  principal: Principal;
  tenantId: string | null;
  actingAs: boolean;
  requestId: string;
}

export const scopeKey = createContextKey<CallScope | undefined>(undefined, { description: "tenantd call scope" });

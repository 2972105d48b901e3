import { chmodSync, writeFileSync } from "node:fs";
import type { Clock } from "../domain/clock.js";
import { OWNER_PERMISSIONS } from "../domain/permissions.js";
import type { KeyStore } from "../store/ports.js";
import { issueKey } from "./key-service.js";

// The first start on an empty store creates an owner key holding every permission and shows it
// once: printed between clearly marked lines, or written to TENANTD_OWNER_KEY_FILE (mode 0600)
// when that is set. Later starts find an owner key and do nothing. Lost every owner key?
// `npm run owner-key` creates another; it needs database access (on PGlite, the server stopped).

export async function bootstrapOwnerKey(deps: {
  keys: Pick<KeyStore, "anyOwnerKey" | "insert">;
  clock: Clock;
  ownerKeyFile: string | undefined;
  print: (text: string) => void;
}): Promise<{ created: boolean; apiKey?: string }> {
  if (await deps.keys.anyOwnerKey()) return { created: false };
  const { record, apiKey } = issueKey({
    kind: "owner",
    env: "live",
    tenantId: null,
    label: "bootstrap owner key",
    permissions: [...OWNER_PERMISSIONS],
    expiresAt: null,
    now: deps.clock.now(),
  });
  await deps.keys.insert(record);
  if (deps.ownerKeyFile) {
    writeFileSync(deps.ownerKeyFile, `${apiKey}\n`, { mode: 0o600 });
    chmodSync(deps.ownerKeyFile, 0o600);
    deps.print(`tenantd: created the owner key and wrote it to ${deps.ownerKeyFile} (mode 0600).\n`);
  } else {
    const bar = "=".repeat(78);
    deps.print(
      [
        bar,
        "  tenantd: first start on an empty store. An owner key was created.",
        "  It is shown only this once: store it in a secrets manager now.",
        "",
        `  ${apiKey}`,
        "",
        "  Use it as `authorization: Bearer <key>`. Set TENANTD_OWNER_KEY_FILE to have it",
        "  written to a file (mode 0600) instead of printed.",
        bar,
        "",
      ].join("\n"),
    );
  }
  return { created: true, apiKey };
}

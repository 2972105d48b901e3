import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DomainError } from "../domain/errors.js";

/**
 * An implementation of a service whose RPCs are declared in the contract but not built yet: each
 * answers UNIMPLEMENTED with reason NOT_IMPLEMENTED, after the same authentication and permission
 * checks as a built RPC.
 */
export function unimplementedService<S extends DescService>(service: S): ServiceImpl<S> {
  const impl = Object.fromEntries(
    service.methods.map((m) => [
      m.localName,
      async () => {
        throw new DomainError(
          "unimplemented",
          "NOT_IMPLEMENTED",
          `${service.typeName}/${m.name} is not implemented yet`,
          {
            metadata: { method: `${service.typeName}/${m.name}` },
          },
        );
      },
    ]),
  );
  return impl as unknown as ServiceImpl<S>;
}

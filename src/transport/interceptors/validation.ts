import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import type { Interceptor } from "@connectrpc/connect";
import { invalidFields } from "../../domain/errors.js";

// Checks every unary request against its protovalidate constraints before the handler runs, and
// answers INVALID_ARGUMENT FIELD_INVALID with one BadRequest field violation per broken rule.

export function validationInterceptor(): Interceptor {
  const validator = createValidator();
  return (next) => async (req) => {
    if (!req.stream) {
      const result = validator.validate(req.method.input, req.message);
      if (result.kind === "invalid") {
        throw invalidFields(
          result.error.violations.map((v) => ({ field: pathToString(v.field), description: v.message })),
        );
      }
      if (result.kind === "error") throw result.error;
    }
    return next(req);
  };
}

import type { DescMethod } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import type { Interceptor } from "@connectrpc/connect";
import { invalidFields } from "../../domain/errors.js";

// Checks every unary request against its protovalidate constraints before the handler runs, and
// answers INVALID_ARGUMENT FIELD_INVALID with one BadRequest field violation per broken rule.
//
// `plain` maps procedures (`<service type name>/<method name>`) to hand-written checks that a
// request certainly passes its rules (services/plain-requests.ts); a request such a check accepts
// skips protovalidate, any other is validated as usual (so errors are always protovalidate's).

export function validationInterceptor(plain?: ReadonlyMap<string, (message: never) => boolean>): Interceptor {
  const validator = createValidator();
  const checks = new WeakMap<DescMethod, ((message: never) => boolean) | null>();
  const checkOf = (m: DescMethod) => {
    let c = checks.get(m);
    if (c === undefined) {
      c = plain?.get(`${m.parent.typeName}/${m.name}`) ?? null;
      checks.set(m, c);
    }
    return c;
  };
  return (next) => (req) => {
    if (!req.stream && checkOf(req.method)?.(req.message as never) !== true) {
      const result = validator.validate(req.method.input, req.message);
      if (result.kind === "invalid") {
        return Promise.reject(
          invalidFields(result.error.violations.map((v) => ({ field: pathToString(v.field), description: v.message }))),
        );
      }
      if (result.kind === "error") return Promise.reject(result.error);
    }
    return next(req);
  };
}

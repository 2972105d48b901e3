// The REST route table, built once at start-up from the services' google.api.http rules
// (including additional_bindings). Routes live in a segment trie: a lookup walks the path's
// segments once, trying a literal child before a `*` child before a trailing `**`, so the cost
// grows with the path's length, not with the number of routes, and the most specific template
// wins (vanguard-go's precedence).
import { type DescField, type DescMethod, type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import { http } from "../../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../../gen/google/api/http_pb.js";
import {
  decodeSegment,
  extractVariables,
  type PathTemplate,
  parseTemplate,
  splitPath,
  TemplateError,
} from "./template.js";

export interface RestBinding {
  readonly method: DescMethod;
  /** Upper-case HTTP method, or "*" for a custom rule that accepts any. */
  readonly httpMethod: string;
  readonly template: PathTemplate;
  /** Fields of each path variable, resolved from the request message. */
  readonly pathFields: ReadonlyMap<string, readonly DescField[]>;
  /** "" (no body), "*" (the whole message) or the field that receives the body. */
  readonly body: "" | "*" | DescField;
  /** The response field sent as the body, or undefined for the whole response message. */
  readonly responseBody: DescField | undefined;
}

export type LookupResult = { binding: RestBinding; vars: Map<string, string> } | { allow: string[] } | undefined;

interface Node {
  literals: Map<string, Node>;
  wildcard: Node | undefined;
  /** Routes ending here, by verb ("" for none), then by HTTP method. */
  leaves: Map<string, Map<string, RestBinding>>;
  /** Routes whose template ends with `**` right after this node. */
  deep: Map<string, Map<string, RestBinding>>;
}

const newNode = (): Node => ({ literals: new Map(), wildcard: undefined, leaves: new Map(), deep: new Map() });

export class RestRouter {
  private readonly root = newNode();
  readonly bindings: RestBinding[] = [];

  /** Adds a route; throws when an equivalent template already serves the same HTTP method. */
  add(binding: RestBinding): void {
    let node = this.root;
    const segs = binding.template.segments;
    let leafMap = node.leaves;
    for (const s of segs) {
      if (s.kind === "deep") {
        leafMap = node.deep;
        break;
      }
      if (s.kind === "literal") {
        let next = node.literals.get(s.value);
        if (!next) {
          next = newNode();
          node.literals.set(s.value, next);
        }
        node = next;
      } else {
        node.wildcard ??= newNode();
        node = node.wildcard;
      }
      leafMap = node.leaves;
    }
    let byMethod = leafMap.get(binding.template.verb);
    if (!byMethod) {
      byMethod = new Map();
      leafMap.set(binding.template.verb, byMethod);
    }
    const existing = byMethod.get(binding.httpMethod);
    if (existing) {
      throw new TemplateError(
        binding.template.source,
        `${binding.httpMethod} ${binding.template.key} is bound twice: by ${existing.method.parent.typeName}.${existing.method.name} ("${existing.template.source}") and by ${binding.method.parent.typeName}.${binding.method.name}`,
      );
    }
    byMethod.set(binding.httpMethod, binding);
    this.bindings.push(binding);
  }

  /**
   * The binding for `httpMethod` and `path` (no query string) with its decoded variables;
   * `{allow}` when the path matches only with other methods (405); undefined when nothing
   * matches (404). Throws EscapeError when a captured value has a malformed escape.
   */
  lookup(httpMethod: string, path: string): LookupResult {
    const raw = splitPath(path);
    if (!raw) return undefined;
    const allow = new Set<string>();
    // A `:verb` route is more specific than a variable that would swallow the colon, so the
    // split form is tried first.
    const last = raw[raw.length - 1] as string;
    const colon = last.lastIndexOf(":");
    if (colon > 0 && colon < last.length - 1) {
      const trimmed = [...raw.slice(0, -1), last.slice(0, colon)];
      const hit = this.walk(trimmed, last.slice(colon + 1), httpMethod, allow);
      if (hit) return { binding: hit, vars: extractVariables(hit.template, trimmed) };
    }
    const hit = this.walk(raw, "", httpMethod, allow);
    if (hit) return { binding: hit, vars: extractVariables(hit.template, raw) };
    return allow.size > 0 ? { allow: [...allow].sort() } : undefined;
  }

  private walk(raw: string[], verb: string, httpMethod: string, allow: Set<string>): RestBinding | undefined {
    const decoded = raw.map(decodeSegment);
    const pick = (byVerb: Map<string, Map<string, RestBinding>>): RestBinding | undefined => {
      const byMethod = byVerb.get(verb);
      if (!byMethod) return undefined;
      const hit = byMethod.get(httpMethod) ?? byMethod.get("*");
      if (!hit) for (const m of byMethod.keys()) allow.add(m);
      return hit;
    };
    const visit = (node: Node, i: number): RestBinding | undefined => {
      if (i === raw.length) return pick(node.leaves) ?? pick(node.deep);
      const d = decoded[i];
      const lit = d === undefined ? undefined : node.literals.get(d);
      return (lit && visit(lit, i + 1)) || (node.wildcard && visit(node.wildcard, i + 1)) || pick(node.deep);
    };
    return visit(this.root, 0);
  }
}

/** Every HTTP binding of `services`' unary methods, as a router. Throws on a bad or duplicate rule. */
export function buildRouter(services: readonly DescService[]): RestRouter {
  const router = new RestRouter();
  for (const service of services) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      const rule = getOption(method, http);
      const where = `${service.typeName}.${method.name}`;
      // The transcoder speaks unary Connect to the handler; streaming over REST is not offered.
      if (method.methodKind !== "unary") {
        throw new Error(`${where}: google.api.http is only supported on unary methods`);
      }
      for (const r of [rule, ...rule.additionalBindings]) {
        if (r !== rule && r.additionalBindings.length > 0) {
          throw new Error(`${where}: additional_bindings must not nest`);
        }
        router.add(bindingOf(method, r, where));
      }
    }
  }
  return router;
}

function bindingOf(method: DescMethod, rule: HttpRule, where: string): RestBinding {
  let httpMethod: string;
  let path: string;
  switch (rule.pattern.case) {
    case "get":
    case "put":
    case "post":
    case "delete":
    case "patch":
      httpMethod = rule.pattern.case.toUpperCase();
      path = rule.pattern.value;
      break;
    case "custom":
      httpMethod = rule.pattern.value.kind.toUpperCase();
      path = rule.pattern.value.path;
      break;
    default:
      throw new Error(`${where}: google.api.http rule has no pattern`);
  }
  const template = parseTemplate(path);
  const fail = (msg: string): never => {
    throw new TemplateError(path, `${where}: ${msg}`);
  };

  const pathFields = new Map<string, DescField[]>();
  for (const v of template.variables) {
    const fields = resolveFieldPath(method, v.fieldPath, fail);
    const leaf = fields[fields.length - 1] as DescField;
    if (leaf.fieldKind !== "scalar" && leaf.fieldKind !== "enum") {
      fail(`path variable "${v.fieldPath.join(".")}" must be a singular scalar or enum field`);
    }
    pathFields.set(v.fieldPath.join("."), fields);
  }

  let body: RestBinding["body"] = "";
  if (rule.body === "*") body = "*";
  else if (rule.body !== "") {
    const f = method.input.fields.find((x) => x.name === rule.body);
    if (!f) fail(`body field "${rule.body}" is not a field of ${method.input.typeName}`);
    body = f as DescField;
    if (pathFields.has(body.name)) fail(`body field "${rule.body}" is also bound by the path`);
  }
  if (body !== "" && (httpMethod === "GET" || httpMethod === "DELETE")) {
    // Allowed by http.proto for custom methods only; bodies on GET/DELETE are lost by proxies.
    fail(`${httpMethod} must not have a body`);
  }

  let responseBody: DescField | undefined;
  if (rule.responseBody !== "") {
    responseBody = method.output.fields.find((x) => x.name === rule.responseBody);
    if (!responseBody) fail(`response_body "${rule.responseBody}" is not a field of ${method.output.typeName}`);
  }
  return { method, httpMethod, template, pathFields, body, responseBody };
}

function resolveFieldPath(method: DescMethod, path: string[], fail: (msg: string) => never): DescField[] {
  const out: DescField[] = [];
  let msg = method.input;
  for (let i = 0; i < path.length; i++) {
    const f = msg.fields.find((x) => x.name === path[i]);
    if (!f) fail(`"${path.join(".")}" is not a field path of ${method.input.typeName}`);
    const field = f as DescField;
    out.push(field);
    if (i < path.length - 1) {
      if (field.fieldKind !== "message") fail(`"${path.slice(0, i + 1).join(".")}" is not a singular message`);
      else msg = field.message;
    }
  }
  return out;
}

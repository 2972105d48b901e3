// Path templates of google.api.http rules (google/api/http.proto):
//
//   Template = "/" Segments [ Verb ] ;
//   Segments = Segment { "/" Segment } ;
//   Segment  = "*" | "**" | LITERAL | Variable ;
//   Variable = "{" FieldPath [ "=" Segments ] "}" ;
//   FieldPath = IDENT { "." IDENT } ;
//   Verb     = ":" LITERAL ;
//
// Decisions (api.md, "REST transcoding decisions"; vanguard-go behaves the same way):
// - `{var}` is `{var=*}`; a variable captures whole segments and cannot nest;
// - `**` matches zero or more segments and must be the last segment, so that matching never has
//   to backtrack over a variable-length run in the middle of a path;
// - the verb is the text after the last `:` of the last segment outside braces, so a literal
//   segment that ends a template never contains `:`;
// - a single-segment variable is fully percent-decoded; a multi-segment one keeps `%2F` encoded
//   (http.proto), so that a decoded value still splits into the segments the client sent;
// - a malformed escape (`%zz`, bad UTF-8) in a captured value is the client's error (400).
// Bad templates throw TemplateError, so that a service with a broken rule refuses to start.

export type Segment = { kind: "literal"; value: string } | { kind: "wildcard" } | { kind: "deep" };

export interface TemplateVariable {
  /** The field path, e.g. ["book", "name"] for `{book.name=…}`. */
  fieldPath: string[];
  /** First segment index the variable captures. */
  start: number;
  /** One past the last segment index; undefined when the variable ends with `**` (runs to the end). */
  end: number | undefined;
}

export interface PathTemplate {
  readonly source: string;
  readonly segments: readonly Segment[];
  readonly variables: readonly TemplateVariable[];
  /** The `:verb` suffix without the colon, or "" when there is none. */
  readonly verb: string;
  /** Equal for templates that match exactly the same paths (variable names do not matter). */
  readonly key: string;
}

export class TemplateError extends Error {
  constructor(
    readonly template: string,
    message: string,
  ) {
    super(`invalid path template "${template}": ${message}`);
    this.name = "TemplateError";
  }
}

/** A value that could not be percent-decoded; the transcoder answers 400. */
export class EscapeError extends Error {
  constructor(readonly value: string) {
    super(`malformed percent-encoding in path value "${value}"`);
    this.name = "EscapeError";
  }
}

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
// RFC 3986 pchar minus ":" (reserved for the verb in the last segment, harmless elsewhere but
// refused everywhere for one simple rule), "*" (wildcards) and braces.
const LITERAL_CHAR_RE = /^[A-Za-z0-9\-._~!$&'()+,;=@%]$/;
const PCT_RE = /%(?![0-9A-Fa-f]{2})/;

export function parseTemplate(source: string): PathTemplate {
  const fail = (msg: string): never => {
    throw new TemplateError(source, msg);
  };
  if (!source.startsWith("/")) fail("must start with '/'");

  // Split off the verb: the last ':' outside braces, after the last '/' outside braces.
  let depth = 0;
  let lastSlash = -1;
  let colon = -1;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "{") depth++;
    else if (c === "}") depth--;
    else if (depth === 0 && c === "/") {
      lastSlash = i;
      colon = -1;
    } else if (depth === 0 && c === ":" && i > lastSlash) colon = i;
    if (depth < 0 || depth > 1) fail(depth < 0 ? "unbalanced '}'" : "nested variables are not allowed");
  }
  if (depth !== 0) fail("unbalanced '{'");
  const path = colon >= 0 ? source.slice(0, colon) : source;
  const verb = colon >= 0 ? source.slice(colon + 1) : "";
  if (colon >= 0) {
    if (verb === "") fail("empty verb after ':'");
    checkLiteral(verb, fail);
  }

  const segments: Segment[] = [];
  const variables: TemplateVariable[] = [];
  let pos = 1; // after the leading '/'
  let current: TemplateVariable | undefined;

  const parseSegment = () => {
    if (path[pos] === "{") {
      if (current) fail("nested variables are not allowed");
      const close = path.indexOf("}", pos);
      const eq = path.indexOf("=", pos);
      const nameEnd = eq >= 0 && eq < close ? eq : close;
      const name = path.slice(pos + 1, nameEnd);
      const fieldPath = name.split(".");
      if (!fieldPath.every((p) => IDENT_RE.test(p))) fail(`bad field path "${name}" in variable`);
      if (variables.some((v) => v.fieldPath.join(".") === name)) fail(`variable "${name}" appears twice`);
      const variable: TemplateVariable = { fieldPath, start: segments.length, end: undefined };
      current = variable;
      if (nameEnd === close) {
        segments.push({ kind: "wildcard" });
        pos = close + 1;
      } else {
        pos = eq + 1;
        parseSegments();
        if (path[pos] !== "}") fail(`expected '}' at offset ${pos}`);
        pos++;
      }
      variable.end = segments.some((s, i) => i >= variable.start && s.kind === "deep") ? undefined : segments.length;
      variables.push(variable);
      current = undefined;
      return;
    }
    let end = pos;
    while (end < path.length && path[end] !== "/" && path[end] !== "}") end++;
    const text = path.slice(pos, end);
    pos = end;
    if (text === "") fail("empty segment (a double or trailing '/')");
    else if (text === "*") segments.push({ kind: "wildcard" });
    else if (text === "**") segments.push({ kind: "deep" });
    else {
      checkLiteral(text, fail);
      segments.push({ kind: "literal", value: decodeLiteral(text, fail) });
    }
  };
  const parseSegments = () => {
    parseSegment();
    while (path[pos] === "/") {
      pos++;
      parseSegment();
    }
  };

  parseSegments();
  if (pos !== path.length) fail(`unexpected '${path[pos]}' at offset ${pos}`);
  const deepAt = segments.findIndex((s) => s.kind === "deep");
  if (deepAt >= 0 && deepAt !== segments.length - 1) fail("'**' must be the last segment");

  const key =
    segments.map((s) => (s.kind === "literal" ? `/${s.value}` : s.kind === "wildcard" ? "/*" : "/**")).join("") +
    (verb ? `:${verb}` : "");
  return { source, segments, variables, verb, key };
}

function checkLiteral(text: string, fail: (msg: string) => never): void {
  for (const c of text) {
    if (!LITERAL_CHAR_RE.test(c)) fail(`character '${c}' is not allowed in literal "${text}"`);
  }
  if (PCT_RE.test(text)) fail(`malformed percent-encoding in literal "${text}"`);
}

function decodeLiteral(text: string, fail: (msg: string) => never): string {
  try {
    return text.includes("%") ? decodeURIComponent(text) : text;
  } catch {
    return fail(`malformed percent-encoding in literal "${text}"`);
  }
}

/**
 * Percent-decodes a captured path value. `keepSlash` leaves `%2F` (any case) encoded, for
 * multi-segment variables. Throws EscapeError on a malformed escape or invalid UTF-8.
 */
export function decodePathValue(raw: string, keepSlash: boolean): string {
  if (!raw.includes("%")) return raw;
  if (PCT_RE.test(raw)) throw new EscapeError(raw);
  try {
    if (!keepSlash) return decodeURIComponent(raw);
    return raw
      .split(/(%2F)/i)
      .map((part, i) => (i % 2 === 1 ? part : decodeURIComponent(part)))
      .join("");
  } catch {
    throw new EscapeError(raw);
  }
}

/** Decodes a path segment for comparison with literals; undefined when it cannot be decoded. */
export function decodeSegment(raw: string): string | undefined {
  if (!raw.includes("%")) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/**
 * Splits a request path (no query string) into raw segments. Returns undefined for paths no
 * template can match: empty segments, i.e. a trailing or double slash, or the bare root.
 */
export function splitPath(path: string): string[] | undefined {
  if (path.length < 2 || path[0] !== "/") return undefined;
  const segments = path.slice(1).split("/");
  return segments.includes("") ? undefined : segments;
}

/** Captured values of `template`'s variables, from raw segments already known to match it. */
export function extractVariables(template: PathTemplate, raw: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of template.variables) {
    const end = v.end ?? raw.length;
    const multi = end - v.start !== 1 || v.end === undefined;
    out.set(v.fieldPath.join("."), decodePathValue(raw.slice(v.start, end).join("/"), multi));
  }
  return out;
}

/**
 * Matches one template against a path; undefined when it does not match. The router uses a
 * trie instead; this is the reference semantics (and what the unit tests pin down).
 */
export function matchTemplate(template: PathTemplate, path: string): Map<string, string> | undefined {
  let raw = splitPath(path);
  if (!raw) return undefined;
  if (template.verb) {
    const last = raw[raw.length - 1] as string;
    const suffix = `:${template.verb}`;
    if (!last.endsWith(suffix) || last.length === suffix.length) return undefined;
    raw = [...raw.slice(0, -1), last.slice(0, -suffix.length)];
  }
  const segs = template.segments;
  const deep = segs.length > 0 && segs[segs.length - 1]?.kind === "deep";
  const fixed = deep ? segs.length - 1 : segs.length;
  if (deep ? raw.length < fixed : raw.length !== fixed) return undefined;
  for (let i = 0; i < fixed; i++) {
    const s = segs[i] as Segment;
    if (s.kind === "literal" && decodeSegment(raw[i] as string) !== s.value) return undefined;
  }
  return extractVariables(template, raw);
}

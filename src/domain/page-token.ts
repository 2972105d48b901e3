import { createHmac, timingSafeEqual } from "node:crypto";
import { DomainError } from "./errors.js";

// Page tokens are opaque to clients and tamper-evident: base64url(JSON payload) "." HMAC-SHA256,
// keyed by a server secret. The payload carries the position (last sort key) and a digest of the
// query's filters, so a token cannot be replayed against another query, plus an expiry.

export interface PagePosition {
  /** Sort key of the last item returned: creation time (ms) and id. */
  t: number;
  id: string;
}

interface Payload extends PagePosition {
  q: string;
  exp: number;
}

const TOKEN_TTL_MS = 24 * 60 * 60 * 1000;

function invalid(): DomainError {
  return new DomainError("invalid_argument", "PAGE_TOKEN_INVALID", "page_token is invalid or expired", {
    fieldViolations: [{ field: "page_token", description: "invalid or expired page token", reason: "FIELD_INVALID" }],
  });
}

export class PageTokens {
  constructor(
    private readonly secret: Buffer,
    private readonly now: () => number,
  ) {}

  private mac(data: string): string {
    return createHmac("sha256", this.secret).update(data).digest("base64url");
  }

  encode(pos: PagePosition, query: string): string {
    const payload: Payload = { ...pos, q: query, exp: this.now() + TOKEN_TTL_MS };
    const data = Buffer.from(JSON.stringify(payload)).toString("base64url");
    return `${data}.${this.mac(data)}`;
  }

  /** Returns the position, undefined for an empty token, or throws PAGE_TOKEN_INVALID. */
  decode(token: string, query: string): PagePosition | undefined {
    if (token === "") return undefined;
    const dot = token.indexOf(".");
    if (dot <= 0) throw invalid();
    const data = token.slice(0, dot);
    const sig = Buffer.from(token.slice(dot + 1));
    const expected = Buffer.from(this.mac(data));
    if (sig.length !== expected.length || !timingSafeEqual(sig, expected)) throw invalid();
    let p: Payload;
    try {
      p = JSON.parse(Buffer.from(data, "base64url").toString("utf8")) as Payload;
    } catch {
      throw invalid();
    }
    if (p.q !== query || typeof p.t !== "number" || typeof p.id !== "string" || p.exp < this.now()) throw invalid();
    return { t: p.t, id: p.id };
  }
}

/** Page size as the contract defines it: 0 means 20, at most 100. */
export function pageSize(requested: number): number {
  if (requested <= 0) return 20;
  return Math.min(requested, 100);
}

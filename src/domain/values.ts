// Checks of field values that protovalidate cannot express: IANA time zones, ISO 4217 currencies,
// and slugs derived from names.

const timeZones = new Set<string>([...Intl.supportedValuesOf("timeZone"), "UTC", "Etc/UTC"]);
const currencies = new Set<string>(Intl.supportedValuesOf("currency"));

export function isTimeZone(s: string): boolean {
  if (timeZones.has(s)) return true;
  // Intl lists canonical names only; accept aliases (e.g. "Asia/Calcutta") that Intl resolves.
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$/.test(s)) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: s });
    return true;
  } catch {
    return false;
  }
}

export function isCurrency(s: string): boolean {
  return /^[A-Z]{3}$/.test(s) && currencies.has(s);
}

export const SLUG_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A slug from a display name: lowercase ASCII letters and digits joined by single dashes. */
export function slugify(name: string): string {
  const s = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 56)
    .replace(/-+$/g, "");
  return s.length > 0 ? s : "tenant";
}

export function isWebhookUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === "https:" || u.protocol === "http:") && u.hostname.length > 0 && !u.username && !u.password;
  } catch {
    return false;
  }
}

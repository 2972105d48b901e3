import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

// protobuf-es converts every string field with TextEncoder / TextDecoder: one native call per
// string. Nearly all of tenantd's strings are short ASCII (ids, names, permissions, metric and
// bucket names), and for those the call costs more than the conversion: a VerifyKey response
// spent about 11 µs of its ~110 µs of server CPU in TextEncoder.encode. Strings of at most 64
// ASCII code units are converted in JavaScript; anything else (longer, or with any code unit or
// byte ≥ 0x80) goes to the platform's codec, so the bytes and strings are always the same as
// without this (test/transport/text-encoding.test.ts compares them over random input). ASCII
// bytes are always valid UTF-8, so strict decoding has nothing to refuse on the short path.

const MAX_SHORT = 64;
const installed = Symbol.for("tenantd/short-ascii-text-encoding");

/** Installs the short-ASCII conversions process-wide (idempotent). */
export function installShortAsciiTextEncoding(): void {
  const base = getTextEncoding() as ReturnType<typeof getTextEncoding> & { [installed]?: true };
  if (base[installed]) return;
  const encoding = {
    checkUtf8: base.checkUtf8,
    encodeUtf8(text: string): Uint8Array<ArrayBuffer> {
      const n = text.length;
      if (n > MAX_SHORT) return base.encodeUtf8(text);
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c >= 0x80) return base.encodeUtf8(text);
        out[i] = c;
      }
      return out;
    },
    decodeUtf8(bytes: Uint8Array, strict?: boolean): string {
      const n = bytes.length;
      if (n > MAX_SHORT) return base.decodeUtf8(bytes, strict);
      for (let i = 0; i < n; i++) if ((bytes[i] as number) >= 0x80) return base.decodeUtf8(bytes, strict);
      return String.fromCharCode.apply(null, bytes as unknown as number[]);
    },
    [installed]: true as const,
  };
  configureTextEncoding(encoding);
}

// Response messages that a handler answers more than once, unchanged: the answer to a VerifyKey of
// a cached key is the same message for every call until the key's cache entry is replaced. The
// gRPC fast path encodes such a message once and writes the same bytes for every later call
// (about 10 µs a call for VerifyKey, most of it the permission list). The other protocols
// serialize it as usual: it is an ordinary message.
//
// A message handed to `reuseResponse` must never be changed afterwards, by its handler or anyone.

/** Marked messages: undefined until first encoded, then their bytes. */
const encodings = new WeakMap<object, Uint8Array | null>();

/** Marks `message` as answered again unchanged; returns it. */
export function reuseResponse<T extends object>(message: T): T {
  if (!encodings.has(message)) encodings.set(message, null);
  return message;
}

/** A marked message's bytes once encoded; null for a marked message not yet encoded; undefined for any other. */
export function reusedBytes(message: object): Uint8Array | null | undefined {
  return encodings.get(message);
}

/** Keeps the bytes of a marked message (`reusedBytes` answered null). */
export function keepBytes(message: object, bytes: Uint8Array): void {
  encodings.set(message, bytes);
}

import {
  create,
  type DescFile,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { drainSignalKey } from "./server.js";

// gRPC server reflection (grpc.reflection.v1 and the older v1alpha that many tools still ask
// first), answered from the descriptors protobuf-es embeds in generated code. The schema served is
// exactly what the router serves: every registered service, the files declaring them, and their
// imports transitively (WKTs, google/api, buf/validate, …), plus any extra files given, such as
// google/rpc/error_details so that tools can decode error details.
//
// The two versions are wire-identical, so v1alpha messages are re-read as v1 and back: one
// implementation, no drift between them.

export interface ReflectionOptions {
  /** Files to describe besides those of the served services (and their imports). */
  extraFiles?: DescFile[];
}

/**
 * Registers grpc.reflection.v1.ServerReflection and grpc.reflection.v1alpha.ServerReflection. The
 * index is built on the first request from the router's services, so it does not matter whether
 * other services are registered before or after this call.
 */
export function registerReflection(router: ConnectRouter, opts: ReflectionOptions | DescService[] = {}): void {
  // A list of services is accepted too: their files are described (served or not).
  const extraFiles = Array.isArray(opts) ? opts.map((s) => s.file) : (opts.extraFiles ?? []);
  let index: Index | undefined;
  const getIndex = () => {
    index ??= buildIndex(
      router.handlers.map((h) => h.service.file),
      extraFiles,
      router.handlers.map((h) => h.service.typeName),
    );
    return index;
  };

  router.service(v1.ServerReflection, {
    serverReflectionInfo: (requests, ctx) => serve(requests, ctx, (req, sent) => answer(getIndex(), req, sent)),
  });
  router.service(v1alpha.ServerReflection, {
    serverReflectionInfo: (requests, ctx) =>
      serve(requests, ctx, (req, sent) => {
        const asV1 = fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req));
        const res = answer(getIndex(), asV1, sent);
        return fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(v1.ServerReflectionResponseSchema, res));
      }),
  });
}

/** One response per request, in order, until the client half-closes or the server drains. */
async function* serve<Req, Res>(
  requests: AsyncIterable<Req>,
  ctx: HandlerContext,
  respond: (req: Req, sent: Set<string>) => Res,
): AsyncIterable<Res> {
  // Files already sent on this stream are not sent again as dependencies (as grpc-go does): a
  // client resolving many symbols would otherwise receive descriptor.proto dozens of times.
  const sent = new Set<string>();
  const drain = ctx.values.get(drainSignalKey);
  let onDrain = () => {};
  const drained = new Promise<"drained">((resolve) => {
    onDrain = () => resolve("drained");
    if (drain.aborted) onDrain();
    else drain.addEventListener("abort", onDrain, { once: true });
  });
  const it = requests[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await Promise.race([it.next(), drained]);
      if (next === "drained" || next.done) return;
      yield respond(next.value, sent);
    }
  } finally {
    // The drain signal is shared by every call: leave no listener behind.
    drain.removeEventListener("abort", onDrain);
  }
}

interface Index {
  services: string[];
  files: Map<string, DescFile>;
  /** Fully-qualified names of every type, service, method, field, oneof and enum value. */
  symbols: Map<string, DescFile>;
  /** extendee type name → extension number → declaring file */
  extensions: Map<string, Map<number, DescFile>>;
  /** every message type name, so an unknown extendee can be told from one without extensions */
  messages: Set<string>;
}

function buildIndex(roots: DescFile[], extra: DescFile[], serviceNames: string[]): Index {
  const files = new Map<string, DescFile>();
  // DescFile.name drops the ".proto" suffix; reflection speaks in import paths, as in the proto.
  const visit = (f: DescFile) => {
    if (files.has(f.proto.name)) return;
    files.set(f.proto.name, f);
    for (const d of f.dependencies) visit(d);
  };
  for (const f of [...roots, ...extra]) visit(f);

  const symbols = new Map<string, DescFile>();
  const extensions = new Map<string, Map<number, DescFile>>();
  const messages = new Set<string>();
  for (const file of files.values()) {
    for (const t of nestedTypes(file)) {
      symbols.set(t.typeName, file);
      switch (t.kind) {
        case "message":
          messages.add(t.typeName);
          for (const f of t.fields) symbols.set(`${t.typeName}.${f.name}`, file);
          for (const o of t.oneofs) symbols.set(`${t.typeName}.${o.name}`, file);
          break;
        case "enum": {
          // Enum values are scoped like C++ enumerators: siblings of their enum, not children.
          const scope = t.typeName.slice(0, Math.max(0, t.typeName.lastIndexOf(".")));
          for (const v of t.values) symbols.set(scope ? `${scope}.${v.name}` : v.name, file);
          break;
        }
        case "service":
          for (const m of t.methods) symbols.set(`${t.typeName}.${m.name}`, file);
          break;
        case "extension": {
          const byNumber = extensions.get(t.extendee.typeName) ?? new Map<number, DescFile>();
          extensions.set(t.extendee.typeName, byNumber);
          byNumber.set(t.number, file);
          break;
        }
      }
    }
  }
  return { services: [...new Set(serviceNames)].sort(), files, symbols, extensions, messages };
}

const encoded = new WeakMap<DescFile, Uint8Array>();
function encode(file: DescFile): Uint8Array {
  let bytes = encoded.get(file);
  if (!bytes) {
    bytes = toBinary(FileDescriptorProtoSchema, file.proto);
    encoded.set(file, bytes);
  }
  return bytes;
}

/** The file first, then its imports breadth-first, skipping those already sent on the stream. */
function withDependencies(file: DescFile, sent: Set<string>): Uint8Array[] {
  const out: Uint8Array[] = [];
  const seen = new Set<string>();
  const queue = [file];
  for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
    if (seen.has(f.proto.name)) continue;
    seen.add(f.proto.name);
    if (out.length === 0 || !sent.has(f.proto.name)) {
      sent.add(f.proto.name);
      out.push(encode(f));
    }
    queue.push(...f.dependencies);
  }
  return out;
}

type ResponseInit = MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"];

function answer(index: Index, req: v1.ServerReflectionRequest, sent: Set<string>): v1.ServerReflectionResponse {
  return create(v1.ServerReflectionResponseSchema, {
    validHost: req.host,
    originalRequest: req,
    messageResponse: respond(index, req, sent),
  });
}

function respond(index: Index, req: v1.ServerReflectionRequest, sent: Set<string>): ResponseInit {
  const files = (file: DescFile | undefined, what: string): ResponseInit =>
    file
      ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(file, sent) } }
      : error(Code.NotFound, `${what} not found`);

  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } };
    case "fileByFilename":
      return files(index.files.get(r.value), `file "${r.value}"`);
    case "fileContainingSymbol":
      return files(index.symbols.get(r.value), `symbol "${r.value}"`);
    case "fileContainingExtension":
      return files(
        index.extensions.get(r.value.containingType)?.get(r.value.extensionNumber),
        `extension ${r.value.extensionNumber} of "${r.value.containingType}"`,
      );
    case "allExtensionNumbersOfType": {
      if (!index.messages.has(r.value)) return error(Code.NotFound, `type "${r.value}" not found`);
      const numbers = [...(index.extensions.get(r.value)?.keys() ?? [])].sort((a, b) => a - b);
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } };
    }
    default:
      return error(Code.InvalidArgument, "no request given in message_request");
  }
}

function error(code: Code, message: string): ResponseInit {
  return { case: "errorResponse", value: { errorCode: code, errorMessage: message } };
}

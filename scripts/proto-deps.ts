// Materialises the third-party schemas that proto/ imports into .proto-deps/ (git-ignored), from
// packages installed by `npm ci`. No registry is needed at build time.
//
// - google/api, google/rpc: from google-proto-files
// - grpc/health/v1, grpc/reflection/v1 and v1alpha: from grpc-health-check and @grpc/reflection
// - buf/validate/validate.proto: no package ships the .proto file, but @bufbuild/protovalidate embeds
//   its FileDescriptorProto; the structure (messages, fields, enums, extensions) is printed back to
//   proto source here. Options are left out: they matter to protovalidate at run time, and the run
//   time uses the package's own descriptor, never this file.
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const root = join(import.meta.dirname, "..");
const out = join(root, ".proto-deps");
const require = createRequire(import.meta.url);
const pkgDir = (name: string) => dirname(require.resolve(`${name}/package.json`));

const copies: Array<[from: string, to: string]> = [
  ...["annotations", "http", "field_behavior", "resource", "client", "launch_stage"].map((n): [string, string] => [
    join(pkgDir("google-proto-files"), `google/api/${n}.proto`),
    `google/api/${n}.proto`,
  ]),
  ...["status", "error_details", "code"].map((n): [string, string] => [
    join(pkgDir("google-proto-files"), `google/rpc/${n}.proto`),
    `google/rpc/${n}.proto`,
  ]),
  [join(pkgDir("grpc-health-check"), "proto/health/v1/health.proto"), "grpc/health/v1/health.proto"],
  [
    join(pkgDir("@grpc/reflection"), "build/proto/grpc/reflection/v1/reflection.proto"),
    "grpc/reflection/v1/reflection.proto",
  ],
  [
    join(pkgDir("@grpc/reflection"), "build/proto/grpc/reflection/v1alpha/reflection.proto"),
    "grpc/reflection/v1alpha/reflection.proto",
  ],
];

for (const [from, to] of copies) {
  mkdirSync(dirname(join(out, to)), { recursive: true });
  copyFileSync(from, join(out, to));
}

const typeNames: Record<number, string> = {
  [FieldDescriptorProto_Type.DOUBLE]: "double",
  [FieldDescriptorProto_Type.FLOAT]: "float",
  [FieldDescriptorProto_Type.INT64]: "int64",
  [FieldDescriptorProto_Type.UINT64]: "uint64",
  [FieldDescriptorProto_Type.INT32]: "int32",
  [FieldDescriptorProto_Type.FIXED64]: "fixed64",
  [FieldDescriptorProto_Type.FIXED32]: "fixed32",
  [FieldDescriptorProto_Type.BOOL]: "bool",
  [FieldDescriptorProto_Type.STRING]: "string",
  [FieldDescriptorProto_Type.BYTES]: "bytes",
  [FieldDescriptorProto_Type.UINT32]: "uint32",
  [FieldDescriptorProto_Type.SFIXED32]: "sfixed32",
  [FieldDescriptorProto_Type.SFIXED64]: "sfixed64",
  [FieldDescriptorProto_Type.SINT32]: "sint32",
  [FieldDescriptorProto_Type.SINT64]: "sint64",
};

function fieldType(f: FieldDescriptorProto): string {
  if (f.type === FieldDescriptorProto_Type.MESSAGE || f.type === FieldDescriptorProto_Type.ENUM) return f.typeName;
  const t = typeNames[f.type];
  if (t === undefined) throw new Error(`unsupported field type ${f.type} on ${f.name}`);
  return t;
}

function label(f: FieldDescriptorProto, proto3: boolean): string {
  if (f.label === FieldDescriptorProto_Label.REPEATED) return "repeated ";
  if (f.label === FieldDescriptorProto_Label.REQUIRED) return "required ";
  if (proto3 && !f.proto3Optional) return "";
  return "optional ";
}

function printEnum(e: EnumDescriptorProto, ind: string): string {
  const lines = [`${ind}enum ${e.name} {`];
  for (const v of e.value) lines.push(`${ind}  ${v.name} = ${v.number};`);
  for (const r of e.reservedRange) lines.push(`${ind}  reserved ${r.start} to ${r.end};`);
  for (const n of e.reservedName) lines.push(`${ind}  reserved "${n}";`);
  lines.push(`${ind}}`);
  return lines.join("\n");
}

function printField(f: FieldDescriptorProto, ind: string, proto3: boolean, inOneof: boolean): string {
  const lab = inOneof ? "" : label(f, proto3);
  return `${ind}${lab}${fieldType(f)} ${f.name} = ${f.number};`;
}

function printMessage(m: DescriptorProto, ind: string, proto3: boolean): string {
  const lines = [`${ind}message ${m.name} {`];
  const inner = `${ind}  `;
  for (const n of m.nestedType) {
    if (n.options?.mapEntry) throw new Error(`map fields are not supported (${m.name}.${n.name})`);
    lines.push(printMessage(n, inner, proto3));
  }
  for (const e of m.enumType) lines.push(printEnum(e, inner));
  const oneofFields = new Map<number, FieldDescriptorProto[]>();
  for (const f of m.field) {
    const real = isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional;
    if (real) {
      const idx = f.oneofIndex as number;
      oneofFields.set(idx, [...(oneofFields.get(idx) ?? []), f]);
    } else {
      lines.push(printField(f, inner, proto3, false));
    }
  }
  for (const [idx, fields] of oneofFields) {
    lines.push(`${inner}oneof ${m.oneofDecl[idx]?.name} {`);
    for (const f of fields) lines.push(printField(f, `${inner}  `, proto3, true));
    lines.push(`${inner}}`);
  }
  for (const r of m.extensionRange)
    lines.push(`${inner}extensions ${r.start} to ${r.end >= 536870912 ? "max" : r.end - 1};`);
  for (const r of m.reservedRange) lines.push(`${inner}reserved ${r.start} to ${r.end - 1};`);
  for (const n of m.reservedName) lines.push(`${inner}reserved "${n}";`);
  lines.push(`${ind}}`);
  return lines.join("\n");
}

function printFile(fd: FileDescriptorProto): string {
  const proto3 = fd.syntax === "proto3";
  const lines = [
    "// Generated by scripts/proto-deps.ts from the descriptor embedded in @bufbuild/protovalidate.",
    `syntax = "${fd.syntax || "proto2"}";`,
    `package ${fd.package};`,
    ...fd.dependency.map((d) => `import "${d}";`),
  ];
  for (const m of fd.messageType) lines.push(printMessage(m, "", proto3));
  for (const e of fd.enumType) lines.push(printEnum(e, ""));
  const byExtendee = new Map<string, FieldDescriptorProto[]>();
  for (const x of fd.extension) byExtendee.set(x.extendee, [...(byExtendee.get(x.extendee) ?? []), x]);
  for (const [extendee, fields] of byExtendee) {
    lines.push(`extend ${extendee} {`);
    for (const f of fields) lines.push(printField(f, "  ", proto3, false));
    lines.push("}");
  }
  return `${lines.join("\n")}\n`;
}

mkdirSync(join(out, "buf/validate"), { recursive: true });
writeFileSync(join(out, "buf/validate/validate.proto"), printFile(file_buf_validate_validate.proto));
console.log(`proto-deps: wrote ${copies.length + 1} files to .proto-deps/`);

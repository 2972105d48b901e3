import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import {
  type ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflection as ServerReflectionV1,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { access } from "../../gen/tenantd/v1/options_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { createHealthService } from "../../src/transport/health.js";
import { registerReflection } from "../../src/transport/reflection.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { bufCurl } from "./helpers.js";

// Reflection is what lets generic tools (buf curl, grpcurl, Postman) call the API without the
// .proto files, so the real `buf curl` is the judge here, for both reflection versions.

let srv: TestServer;
beforeAll(async () => {
  const health = createHealthService({ probes: {} });
  srv = await startTestServer({
    routes: (router) => {
      health.register(router);
      // An unimplemented TenantService is enough: its schema pulls in google/api, buf/validate,
      // the WKTs and the tenantd options, which reflection must all serve.
      router.service(TenantService, {});
      registerReflection(router, { extraFiles: [file_google_rpc_error_details] });
    },
  });
});
afterAll(() => srv.close());

const SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  "tenantd.v1.TenantService",
];

const modes: [string, string[]][] = [
  ["gRPC v1 over h2c", ["--protocol", "grpc", "--http2-prior-knowledge"]],
  ["gRPC v1alpha over h2c", ["--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1alpha"]],
  ["Connect v1 over HTTP/1.1", ["--protocol", "connect"]],
  ["Connect v1alpha over HTTP/1.1", ["--protocol", "connect", "--reflect-protocol", "grpc-v1alpha"]],
];

describe.each(modes)("buf curl, %s", (_name, flags) => {
  it("lists every service", async () => {
    const r = await bufCurl([...flags, srv.baseUrl, "--list-services"]);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim().split("\n")).toEqual(SERVICES);
  });

  it("lists methods", async () => {
    const r = await bufCurl([...flags, srv.baseUrl, "--list-methods"]);
    expect(r.stdout).toContain("grpc.health.v1.Health/Watch");
    expect(r.stdout).toContain("tenantd.v1.TenantService/CreateTenant");
  });

  it("calls grpc.health.v1.Health/Check", async () => {
    const r = await bufCurl([...flags, "-d", "{}", `${srv.baseUrl}/grpc.health.v1.Health/Check`]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ status: "SERVING" });
  });

  it("resolves a tenantd RPC's whole schema (the call itself is unimplemented here)", async () => {
    const r = await bufCurl([...flags, "-d", "{}", `${srv.baseUrl}/tenantd.v1.TenantService/ListTenants`]);
    // Reaching the server at all proves the request type resolved with all its imports.
    expect(r.stderr).toContain('"code": "unimplemented"');
  });
});

describe("requests by kind (v1 client)", () => {
  /** Sends `requests` on one stream and returns the responses in order. */
  async function ask(
    ...requests: MessageInitShape<typeof ServerReflectionRequestSchema>[]
  ): Promise<ServerReflectionResponse[]> {
    const client = createClient(ServerReflectionV1, createGrpcTransport({ baseUrl: srv.baseUrl }));
    const out: ServerReflectionResponse[] = [];
    async function* input() {
      for (const r of requests) yield r;
    }
    for await (const res of client.serverReflectionInfo(input())) out.push(res);
    return out;
  }
  const fileNames = (res: ServerReflectionResponse | undefined): string[] =>
    res?.messageResponse.case === "fileDescriptorResponse"
      ? res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name)
      : [];
  const errorCode = (res: ServerReflectionResponse | undefined) =>
    res?.messageResponse.case === "errorResponse" ? res.messageResponse.value.errorCode : undefined;

  it("returns the file containing a service first, then its imports transitively", async () => {
    const [res] = await ask({ messageRequest: { case: "fileContainingSymbol", value: "tenantd.v1.TenantService" } });
    const names = fileNames(res);
    expect(names[0]).toBe("tenantd/v1/tenant_service.proto");
    expect(names).toEqual(
      expect.arrayContaining([
        "tenantd/v1/tenant.proto",
        "tenantd/v1/options.proto",
        "buf/validate/validate.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
      ]),
    );
    expect(new Set(names).size).toBe(names.length);
    expect(res?.originalRequest?.messageRequest.case).toBe("fileContainingSymbol");
  });

  it("does not resend files already sent on the same stream", async () => {
    const [first, second] = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "tenantd.v1.TenantService" } },
      { messageRequest: { case: "fileContainingSymbol", value: "tenantd.v1.Tenant" } },
    );
    expect(fileNames(first).length).toBeGreaterThan(3);
    expect(fileNames(second)).toEqual(["tenantd/v1/tenant.proto"]);
  });

  it.each([
    ["a method", "grpc.health.v1.Health.Check"],
    ["a message", "grpc.health.v1.HealthCheckRequest"],
    ["a field", "grpc.health.v1.HealthCheckRequest.service"],
    ["a nested enum", "grpc.health.v1.HealthCheckResponse.ServingStatus"],
    ["an enum value", "grpc.health.v1.HealthCheckResponse.SERVING"],
  ])("finds the file of %s", async (_kind, symbol) => {
    const [res] = await ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } });
    expect(fileNames(res)[0]).toBe("grpc/health/v1/health.proto");
  });

  it("finds files by name, including extra files", async () => {
    const [wkt, extra] = await ask(
      { messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } },
      { messageRequest: { case: "fileByFilename", value: "google/rpc/error_details.proto" } },
    );
    expect(fileNames(wkt)).toEqual(["google/protobuf/timestamp.proto"]);
    expect(fileNames(extra)[0]).toBe("google/rpc/error_details.proto");
  });

  it("finds extensions and lists extension numbers", async () => {
    const [ext, numbers] = await ask(
      {
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "google.protobuf.MethodOptions", extensionNumber: access.number },
        },
      },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "google.protobuf.MethodOptions" } },
    );
    expect(fileNames(ext)[0]).toBe("tenantd/v1/options.proto");
    expect(numbers?.messageResponse.case).toBe("allExtensionNumbersResponse");
    if (numbers?.messageResponse.case === "allExtensionNumbersResponse") {
      expect(numbers.messageResponse.value.baseTypeName).toBe("google.protobuf.MethodOptions");
      // google.api.http and tenantd.v1.access
      expect(numbers.messageResponse.value.extensionNumber).toEqual(expect.arrayContaining([72295728, access.number]));
    }
  });

  it("answers unknown names with NOT_FOUND error responses and keeps the stream usable", async () => {
    const responses = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "no.such.Symbol" } },
      { messageRequest: { case: "fileByFilename", value: "no/such.proto" } },
      {
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "google.protobuf.MethodOptions", extensionNumber: 1 },
        },
      },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "no.such.Message" } },
      { messageRequest: { case: "listServices", value: "" } },
    );
    expect(responses.slice(0, 4).map(errorCode)).toEqual([Code.NotFound, Code.NotFound, Code.NotFound, Code.NotFound]);
    expect(responses[4]?.messageResponse.case).toBe("listServicesResponse");
  });

  it("serves v1alpha with the same answers", async () => {
    const client = createClient(ServerReflectionV1alpha, createGrpcTransport({ baseUrl: srv.baseUrl }));
    async function* input() {
      yield { host: "h", messageRequest: { case: "listServices" as const, value: "" } };
    }
    const out = [];
    for await (const res of client.serverReflectionInfo(input())) out.push(res);
    expect(out).toHaveLength(1);
    expect(out[0]?.validHost).toBe("h");
    expect(
      out[0]?.messageResponse.case === "listServicesResponse" &&
        out[0].messageResponse.value.service.map((s) => s.name),
    ).toEqual(SERVICES);
  });
});

// The baseline of quality.md's "gRPC unary path ≥ 0.8× a bare @grpc/grpc-js echo server": a
// grpc-js server with nothing but grpc.health.v1.Health/Check answering a static SERVING, the
// same RPC and bytes h2load sends to tenantd's Health/Check. Serializers are protobuf-es (the
// ones tenantd uses), so the comparison measures the servers, not the codecs.
//
//   startGrpcJsEcho(port) → { port, close() }   (port 0 picks a free port)
//   tsx bench/grpc-echo.ts [port]               runs it standalone until SIGINT/SIGTERM
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type HealthCheckRequest,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";

const healthService: grpc.ServiceDefinition = {
  Check: {
    path: "/grpc.health.v1.Health/Check",
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: HealthCheckRequest) => Buffer.from(toBinary(HealthCheckRequestSchema, m)),
    requestDeserialize: (b: Buffer) => fromBinary(HealthCheckRequestSchema, b),
    responseSerialize: (m: HealthCheckResponse) => Buffer.from(toBinary(HealthCheckResponseSchema, m)),
    responseDeserialize: (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
  },
};

export interface GrpcJsEcho {
  port: number;
  close(): Promise<void>;
}

export function startGrpcJsEcho(port: number, host = "127.0.0.1"): Promise<GrpcJsEcho> {
  // Created once: an echo server answers with the same message every time.
  const serving = create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING });
  const server = new grpc.Server();
  server.addService(healthService, {
    Check: (
      _call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
      cb: grpc.sendUnaryData<HealthCheckResponse>,
    ) => cb(null, serving),
  });
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
      if (err) {
        reject(err);
        return;
      }
      resolve({
        port: bound,
        close: () =>
          new Promise<void>((done) => {
            server.tryShutdown(() => done());
            // In-flight calls of a load generator that was killed would hold tryShutdown open.
            setTimeout(() => server.forceShutdown(), 2000).unref();
          }),
      });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const echo = await startGrpcJsEcho(Number(process.argv[2] ?? 0));
  process.stdout.write(`grpc-js echo listening on 127.0.0.1:${echo.port}\n`);
  const stop = () => void echo.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

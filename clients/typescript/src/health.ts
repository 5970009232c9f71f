// The standard gRPC health service (grpc/health/v1/health.proto), which
// ledgerd serves: SERVING while it takes calls, NOT_SERVING while it drains.
// Like the error details, its descriptors are built here from a small
// hand-written FileDescriptorProto (ledger.proto does not import it, so it
// is not part of the generated code). Only Check is declared: the client
// polls it to skip a replica that is down or draining.

import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage, GenService } from "@bufbuild/protobuf/codegenv2";
import { FieldDescriptorProto_Type as Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

/** grpc.health.v1.HealthCheckRequest: the service asked about ("" for the server as a whole). */
export type HealthCheckRequest = Message<"grpc.health.v1.HealthCheckRequest"> & { service: string };

/** grpc.health.v1.HealthCheckResponse.ServingStatus. */
export enum ServingStatus {
  UNKNOWN = 0,
  SERVING = 1,
  NOT_SERVING = 2,
  SERVICE_UNKNOWN = 3,
}

/** grpc.health.v1.HealthCheckResponse: whether the server serves. */
export type HealthCheckResponse = Message<"grpc.health.v1.HealthCheckResponse"> & { status: ServingStatus };

const healthFile = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    { name: "HealthCheckRequest", field: [{ name: "service", number: 1, type: Type.STRING, jsonName: "service", label: 1 }] },
    {
      name: "HealthCheckResponse",
      field: [
        {
          name: "status",
          number: 1,
          type: Type.ENUM,
          jsonName: "status",
          label: 1,
          typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
        },
      ],
      enumType: [
        {
          name: "ServingStatus",
          value: [
            { name: "UNKNOWN", number: 0 },
            { name: "SERVING", number: 1 },
            { name: "NOT_SERVING", number: 2 },
            { name: "SERVICE_UNKNOWN", number: 3 },
          ],
        },
      ],
    },
  ],
  service: [
    {
      name: "Health",
      method: [
        {
          name: "Check",
          inputType: ".grpc.health.v1.HealthCheckRequest",
          outputType: ".grpc.health.v1.HealthCheckResponse",
        },
      ],
    },
  ],
});

const registry = createFileRegistry(healthFile, () => undefined);

/** The schema of grpc.health.v1.HealthCheckRequest. */
export const HealthCheckRequestSchema = registry.getMessage("grpc.health.v1.HealthCheckRequest") as GenMessage<HealthCheckRequest>;

/** The descriptor of the grpc.health.v1.Health service (Check only), for Connect's createClient. */
export const HealthService = registry.getService("grpc.health.v1.Health") as GenService<{
  check: { methodKind: "unary"; input: typeof HealthCheckRequestSchema; output: GenMessage<HealthCheckResponse> };
}>;

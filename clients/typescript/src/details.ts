// The two google.rpc error-detail messages that ledgerd attaches to its
// errors (google/rpc/error_details.proto). They are not part of the generated
// code (ledger.proto does not import them), so their descriptors are built
// here from a small hand-written FileDescriptorProto with the runtime's
// registry API. Only the fields ledgerd uses are declared; a field this
// descriptor does not know is kept as an unknown field by the decoder, so a
// newer error_details.proto on the server side does no harm.

import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  file_google_protobuf_duration,
  FileDescriptorProtoSchema,
  type Duration,
} from "@bufbuild/protobuf/wkt";

/**
 * google.rpc.ErrorInfo: why an error happened, as a machine-readable reason
 * within a domain. Every ledgerd error carries one with domain `"ledgerd"`;
 * for INVALID_ARGUMENT its metadata names the field (`metadata.field`).
 */
export type ErrorInfo = Message<"google.rpc.ErrorInfo"> & {
  /** The reason, e.g. `"LEASE_LOST"`. */
  reason: string;
  /** The domain of the reason; `"ledgerd"` for ledgerd's own errors. */
  domain: string;
  /** Additional structured details, e.g. `{ field: "key" }`. */
  metadata: { [key: string]: string };
};

/**
 * google.rpc.RetryInfo: how long to wait before retrying. ledgerd attaches
 * one to a rate-limited call and to a grant refused by a quota that frees up
 * by itself; every retry of the client waits at least that long.
 */
export type RetryInfo = Message<"google.rpc.RetryInfo"> & {
  /** The least wait before the next attempt. */
  retryDelay?: Duration;
};

/** One field violation of a {@link BadRequest}. */
export type BadRequest_FieldViolation = Message<"google.rpc.BadRequest.FieldViolation"> & {
  /** The request field that broke a limit or a format, e.g. `"key"`. */
  field: string;
  /** What is wrong with it, e.g. the limit. */
  description: string;
};

/**
 * google.rpc.BadRequest: the fields of a request that were refused. ledgerd
 * attaches one, naming the field, to every INVALID_ARGUMENT error.
 */
export type BadRequest = Message<"google.rpc.BadRequest"> & {
  /** The refused fields. */
  fieldViolations: BadRequest_FieldViolation[];
};

function field(name: string, number: number, type: Type, jsonName: string, extra: { typeName?: string; label?: Label } = {}) {
  return {
    name,
    number,
    type,
    jsonName,
    label: extra.label ?? Label.OPTIONAL,
    ...(extra.typeName ? { typeName: extra.typeName } : {}),
  };
}

const errorDetailsFile = create(FileDescriptorProtoSchema, {
  name: "google/rpc/error_details.proto",
  package: "google.rpc",
  syntax: "proto3",
  dependency: ["google/protobuf/duration.proto"],
  messageType: [
    {
      name: "RetryInfo",
      field: [field("retry_delay", 1, Type.MESSAGE, "retryDelay", { typeName: ".google.protobuf.Duration" })],
    },
    {
      name: "ErrorInfo",
      field: [
        field("reason", 1, Type.STRING, "reason"),
        field("domain", 2, Type.STRING, "domain"),
        field("metadata", 3, Type.MESSAGE, "metadata", {
          label: Label.REPEATED,
          typeName: ".google.rpc.ErrorInfo.MetadataEntry",
        }),
      ],
      nestedType: [
        {
          name: "MetadataEntry",
          field: [field("key", 1, Type.STRING, "key"), field("value", 2, Type.STRING, "value")],
          options: { mapEntry: true },
        },
      ],
    },
    {
      name: "BadRequest",
      field: [
        field("field_violations", 1, Type.MESSAGE, "fieldViolations", {
          label: Label.REPEATED,
          typeName: ".google.rpc.BadRequest.FieldViolation",
        }),
      ],
      nestedType: [
        {
          name: "FieldViolation",
          field: [field("field", 1, Type.STRING, "field"), field("description", 2, Type.STRING, "description")],
        },
      ],
    },
  ],
});

const registry = createFileRegistry(errorDetailsFile, (name) =>
  name === file_google_protobuf_duration.proto.name ? file_google_protobuf_duration : undefined,
);

function messageSchema<T extends Message>(typeName: string): GenMessage<T> {
  const desc = registry.getMessage(typeName);
  if (!desc) {
    throw new Error(`ledgerd client: descriptor for ${typeName} is missing`);
  }
  return desc as GenMessage<T>;
}

/**
 * The schema of google.rpc.ErrorInfo, for `ConnectError.findDetails`,
 * `create`, `toBinary` and `fromBinary` of @bufbuild/protobuf.
 */
export const ErrorInfoSchema: GenMessage<ErrorInfo> = messageSchema<ErrorInfo>("google.rpc.ErrorInfo");

/**
 * The schema of google.rpc.BadRequest, for `ConnectError.findDetails`,
 * `create`, `toBinary` and `fromBinary` of @bufbuild/protobuf.
 */
export const BadRequestSchema: GenMessage<BadRequest> = messageSchema<BadRequest>("google.rpc.BadRequest");

/**
 * The schema of google.rpc.RetryInfo, for `ConnectError.findDetails`,
 * `create`, `toBinary` and `fromBinary` of @bufbuild/protobuf.
 */
export const RetryInfoSchema: GenMessage<RetryInfo> = messageSchema<RetryInfo>("google.rpc.RetryInfo");

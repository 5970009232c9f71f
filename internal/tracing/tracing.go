// Package tracing sets up ledgerd's OpenTelemetry tracer provider from the
// standard OTEL_* environment variables: OTLP export when they ask for it,
// nothing at all otherwise.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName is the service.name of ledgerd's spans unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
// otherwise.
const DefaultServiceName = "ledgerd"

// Provider is the tracer provider that FromEnv set up.
type Provider struct {
	// TracerProvider makes the spans; nil when tracing is off, so that no
	// tracing code runs at all.
	TracerProvider trace.TracerProvider
	// Description says where the spans go, for the start-up log line.
	Description string

	sdk *sdktrace.TracerProvider
}

// Shutdown sends the spans still buffered and stops the exporter. It does
// nothing when tracing is off.
func (p Provider) Shutdown(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// FromEnv sets up tracing as the OTEL_* variables say (getenv reads them):
//
//   - Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or when it is
//     unset and OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. It is off when none of
//     them is set, when OTEL_TRACES_EXPORTER is "none", and when
//     OTEL_SDK_DISABLED is "true": then Provider.TracerProvider is nil.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
//     chooses "http/protobuf" (the default, port 4318) or "grpc" (port
//     4317).
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT
//     (to which /v1/traces is added over HTTP), is where spans go; an
//     http:// URL is sent without TLS. OTEL_SERVICE_NAME names the service
//     (default DefaultServiceName).
//   - The exporter reads its other OTEL_EXPORTER_OTLP_* variables (headers,
//     certificates, timeout, compression), the SDK the sampler
//     (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG; by default every
//     trace that the caller's sampled flag does not exclude) and the batch
//     processor's OTEL_BSP_* variables, and the resource
//     OTEL_RESOURCE_ATTRIBUTES; those are read from the process
//     environment, as the OpenTelemetry SDK does.
//
// A value FromEnv does not know is an error naming the variable.
func FromEnv(ctx context.Context, getenv func(string) string) (Provider, error) {
	if on, err := enabled(getenv); err != nil || !on {
		return Provider{}, err
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	protocolVariable := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, protocolVariable = getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	var exporter sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		protocol = "http/protobuf"
		var options []otlptracehttp.Option
		if url := endpointURL(getenv, protocol); url != "" {
			options = append(options, otlptracehttp.WithEndpointURL(url))
		}
		exporter, err = otlptracehttp.New(ctx, options...)
	case "grpc":
		var options []otlptracegrpc.Option
		if url := endpointURL(getenv, protocol); url != "" {
			options = append(options, otlptracegrpc.WithEndpointURL(url))
		}
		exporter, err = otlptracegrpc.New(ctx, options...)
	default:
		return Provider{}, fmt.Errorf("%s=%q: ledgerd exports traces over \"http/protobuf\" or \"grpc\"", protocolVariable, protocol)
	}
	if err != nil {
		return Provider{}, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	resourceOptions := []resource.Option{
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		resourceOptions = append(resourceOptions, resource.WithAttributes(attribute.String("service.name", name)))
	}
	res, err := resource.New(ctx, resourceOptions...)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return Provider{}, fmt.Errorf("tracing: resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return Provider{TracerProvider: sdk, sdk: sdk, Description: "OTLP " + protocol + " (" + endpoint(getenv) + ")"}, nil
}

// enabled reports whether the variables turn tracing on.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exporter := getenv("OTEL_TRACES_EXPORTER"); exporter {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: ledgerd exports traces with \"otlp\", or not at all with \"none\"", exporter)
	}
}

// endpointURL is the URL of the OTLP endpoint, from getenv: the traces
// endpoint as it is, or the base endpoint (with /v1/traces added over
// HTTP); "" for the exporter's default. The exporter would read them from
// the process environment too; reading them here makes getenv the one
// source of the decision and the destination.
func endpointURL(getenv func(string) string, protocol string) string {
	if url := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); url != "" {
		return url
	}
	url := getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if url != "" && protocol == "http/protobuf" {
		return strings.TrimSuffix(url, "/") + "/v1/traces"
	}
	return url
}

// endpoint names where the spans go, for the log: the endpoint variable
// that the exporter uses, or its default.
func endpoint(getenv func(string) string) string {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if value := getenv(name); value != "" {
			return value
		}
	}
	return "the default endpoint on localhost"
}

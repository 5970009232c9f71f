package ledgerclient

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// requestIDKey is the gRPC metadata key of a call's request id.
const requestIDKey = "x-request-id"

// requestIDField is the key of the request id in an error's ErrorInfo
// metadata.
const requestIDField = "request_id"

// WithRequestID returns a context whose calls carry id as their request
// id (the x-request-id metadata), so that ledgerd logs them under it: every
// attempt of a retried call, and every call of a Do, under the same id. An
// id of up to 128 ASCII letters, digits and "-_.:/+=@" is kept; ledgerd
// replaces another with one of its own. Without it, ledgerd makes an id for
// each attempt. Either way, an *Error's RequestID is the id of the failed
// attempt.
func WithRequestID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, requestIDKey, id)
}

// WithTracerProvider makes the client span of each call with tp, instead
// of OpenTelemetry's global tracer provider (otel.SetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// WithPropagator sends the trace context of each call with p, instead of
// OpenTelemetry's global propagator (otel.SetTextMapPropagator); ledgerd
// reads W3C Trace Context (propagation.TraceContext).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.propagator = p }
}

// WithoutTracing makes no client spans and sends no trace context.
func WithoutTracing() Option {
	return func(o *options) { o.noTracing = true }
}

// tracingOption is the stats handler that makes a client span of every
// call and sends its trace context, so that the pipeline's span is the
// parent of ledgerd's. It follows OpenTelemetry's globals unless the
// options name a provider or propagator: with neither set by the program,
// they are no-ops, and so is tracing.
func (o *options) tracingOption() grpc.DialOption {
	var handlerOptions []otelgrpc.Option
	if o.tracerProvider != nil {
		handlerOptions = append(handlerOptions, otelgrpc.WithTracerProvider(o.tracerProvider))
	}
	if o.propagator != nil {
		handlerOptions = append(handlerOptions, otelgrpc.WithPropagators(o.propagator))
	}
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(handlerOptions...))
}

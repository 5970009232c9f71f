package server

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Propagator is how trace context travels in a call's metadata (and, on
// the HTTP port, in its headers): W3C Trace Context (traceparent,
// tracestate) and W3C Baggage.
var Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// tracingOption is the stats handler that makes a server span of every
// RPC but health checks, a child of the caller's span when the call
// carries a traceparent. Its RPC metrics are off: ledgerd's own are on
// /metrics.
func tracingOption(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	))
}

// The attributes that ledgerd adds to a call's server span.
var (
	spanRequestID = attribute.Key("ledgerd.request_id")
	spanNamespace = attribute.Key("ledgerd.namespace")
	spanOutcome   = attribute.Key("ledgerd.outcome")
)

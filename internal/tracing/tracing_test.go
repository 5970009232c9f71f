package tracing_test

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/otlptest"
	"github.com/ledgerd/ledgerd/internal/tracing"
)

// The OTEL_* variables are also read by the SDK from the process
// environment, so these tests set them there (t.Setenv) and cannot be
// parallel.

func TestOffWithoutVariables(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_SERVICE_NAME": "ledgerd-eu", "OTEL_TRACES_SAMPLER": "always_on"}, // configure, but do not turn on
		{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
	} {
		provider, err := tracing.FromEnv(context.Background(), func(name string) string { return env[name] })
		require.NoError(t, err, env)
		require.Nil(t, provider.TracerProvider, "tracing is off with %v", env)
		require.NoError(t, provider.Shutdown(context.Background()))
	}
}

func TestBadVariables(t *testing.T) {
	for env, want := range map[[2]string]string{
		{"OTEL_TRACES_EXPORTER", "jaeger"}:             `OTEL_TRACES_EXPORTER="jaeger": ledgerd exports traces with "otlp", or not at all with "none"`,
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}:     `OTEL_EXPORTER_OTLP_PROTOCOL="http/json": ledgerd exports traces over "http/protobuf" or "grpc"`,
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"}: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="thrift": ledgerd exports traces over "http/protobuf" or "grpc"`,
	} {
		vars := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", env[0]: env[1]}
		_, err := tracing.FromEnv(context.Background(), func(name string) string { return vars[name] })
		require.EqualError(t, err, want)
	}
}

// TestExportsAsTheVariablesSay turns tracing on with the endpoint alone,
// over gRPC, and checks that a span reaches the receiver with the service
// name of OTEL_SERVICE_NAME.
func TestExportsAsTheVariablesSay(t *testing.T) {
	receiver := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+receiver.Addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "ledgerd-test")
	provider, err := tracing.FromEnv(context.Background(), os.Getenv)
	require.NoError(t, err)
	require.NotNil(t, provider.TracerProvider)
	require.Equal(t, "OTLP grpc (http://"+receiver.Addr+")", provider.Description)

	_, span := provider.TracerProvider.Tracer("test").Start(context.Background(), "hello")
	span.End()
	require.NoError(t, provider.Shutdown(context.Background()), "Shutdown sends what is buffered")
	spans := receiver.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "hello", spans[0].Name)
	require.Equal(t, "ledgerd-test", spans[0].Service)
}

func TestServiceNameDefault(t *testing.T) {
	receiver := otlptest.Start(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+receiver.Addr)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	provider, err := tracing.FromEnv(context.Background(), os.Getenv)
	require.NoError(t, err)
	_, span := provider.TracerProvider.Tracer("test").Start(context.Background(), "hello")
	span.End()
	require.NoError(t, provider.Shutdown(context.Background()))
	spans := receiver.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, tracing.DefaultServiceName, spans[0].Service)
}

package tracing_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/otlptest"
	"github.com/ledgerd/ledgerd/internal/tracing"
)

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestOffWithoutVariables(t *testing.T) {
	t.Parallel()
	for _, vars := range []map[string]string{
		{},
		{"OTEL_SERVICE_NAME": "ledgerd-eu", "OTEL_TRACES_SAMPLER": "always_on"}, // configure, but do not turn on
		{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
	} {
		provider, err := tracing.FromEnv(context.Background(), env(vars))
		require.NoError(t, err, vars)
		require.Nil(t, provider.TracerProvider, "tracing is off with %v", vars)
		require.NoError(t, provider.Shutdown(context.Background()))
	}
}

func TestBadVariables(t *testing.T) {
	t.Parallel()
	for variable, want := range map[[2]string]string{
		{"OTEL_TRACES_EXPORTER", "jaeger"}:               `OTEL_TRACES_EXPORTER="jaeger": ledgerd exports traces with "otlp", or not at all with "none"`,
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}:     `OTEL_EXPORTER_OTLP_PROTOCOL="http/json": ledgerd exports traces over "http/protobuf" or "grpc"`,
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"}: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="thrift": ledgerd exports traces over "http/protobuf" or "grpc"`,
	} {
		vars := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", variable[0]: variable[1]}
		_, err := tracing.FromEnv(context.Background(), env(vars))
		require.EqualError(t, err, want)
	}
}

// TestExports turns tracing on as an operator would, over each protocol,
// and checks that a span reaches the receiver with the service name.
func TestExports(t *testing.T) {
	t.Parallel()
	receiver := otlptest.Start(t)
	overHTTP := httptest.NewServer(receiver)
	t.Cleanup(overHTTP.Close)
	for _, c := range []struct {
		vars        map[string]string
		service     string
		description string
	}{{
		vars:        map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": overHTTP.URL, "OTEL_SERVICE_NAME": "ledgerd-eu"},
		service:     "ledgerd-eu",
		description: "OTLP http/protobuf (" + overHTTP.URL + ")",
	}, {
		vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://" + receiver.Addr},
		service:     tracing.DefaultServiceName,
		description: "OTLP grpc (http://" + receiver.Addr + ")",
	}} {
		provider, err := tracing.FromEnv(context.Background(), env(c.vars))
		require.NoError(t, err)
		require.NotNil(t, provider.TracerProvider)
		require.Equal(t, c.description, provider.Description)
		before := len(receiver.Spans())
		_, span := provider.TracerProvider.Tracer("test").Start(context.Background(), c.description)
		span.End()
		require.NoError(t, provider.Shutdown(context.Background()), "Shutdown sends what is buffered")
		spans := receiver.Spans()[before:]
		require.Len(t, spans, 1, c.description)
		require.Equal(t, c.description, spans[0].Name)
		require.Equal(t, c.service, spans[0].Service)
	}
}

package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "0d": 0, "10ms": 10 * time.Millisecond,
	} {
		got, err := parseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1y", "d", "1.5d", "-1d", "99999999999d"} {
		_, err := parseDuration(in)
		require.Error(t, err, in)
	}
}

func TestTimeFlag(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2025-03-01T10:30:00Z":      time.Date(2025, 3, 1, 10, 30, 0, 0, time.UTC),
		"2025-03-01T10:30:00+02:00": time.Date(2025, 3, 1, 8, 30, 0, 0, time.UTC),
		"2025-03-01":                time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"1d":                        now.Add(-24 * time.Hour),
	} {
		f := timeFlag{now: func() time.Time { return now }}
		require.NoError(t, f.Set(in), in)
		require.True(t, want.Equal(f.t), "%s: got %s, want %s", in, f.t, want)
	}
	for _, in := range []string{"yesterday", "0s", "2025-13-01", "-1h"} {
		f := timeFlag{now: func() time.Time { return now }}
		require.Error(t, f.Set(in), in)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:7070":                 true,
		"127.0.0.2:7070":                 true,
		"localhost:7070":                 true,
		"LOCALHOST:7070":                 true,
		"[::1]:7070":                     true,
		"dns:///localhost:7070":          true,
		"unix:///run/ledgerd.sock":       true,
		"ledgerd.internal:7070":          false,
		"dns:///ledgerd.internal:7070":   false,
		"10.0.0.1:7070":                  false,
		"[2001:db8::1]:7070":             false,
		"localhost.evil.example.com:443": false,
	} {
		require.Equal(t, want, isLoopback(addr), addr)
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	require.Equal(t, "-", formatBytes(nil))
	require.Equal(t, `{"total": 3}`, formatBytes([]byte(`{"total": 3}`)))
	require.Equal(t, "héllo wörld", formatBytes([]byte("héllo wörld")))
	require.Equal(t, "base64:AJ//EA==", formatBytes([]byte{0x00, 0x9f, 0xff, 0x10}))
	require.Equal(t, "base64:YQpi", formatBytes([]byte("a\nb")), "newlines would break a table")
	require.Equal(t, "base64:YmFzZTY0Oms=", formatBytes([]byte("base64:k")), "text that looks encoded is encoded")

	long := formatBytes([]byte(strings.Repeat("é", 200))) // 400 bytes
	require.True(t, strings.HasSuffix(long, "... (400 bytes; -o json shows all)"), long)
	require.Len(t, strings.TrimSuffix(long, "... (400 bytes; -o json shows all)"), 256, "cut on a character boundary")
}

func TestFormatText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "-", formatText(""))
	require.Equal(t, "w1/pid 7", formatText("w1/pid 7"))
	require.Equal(t, `"a\tb"`, formatText("a\tb"))
	require.Equal(t, `"-"`, formatText("-"))
}

func TestFormatDetail(t *testing.T) {
	t.Parallel()
	detail, err := structpb.NewStruct(map[string]any{
		"reason": "bad deploy", "previous_token": 3, "retryable": false, "previous_owner": "w1", "x": nil,
		"nested": map[string]any{"a": 1},
	})
	require.NoError(t, err)
	require.Equal(t, `nested={"a":1} previous_owner=w1 previous_token=3 reason="bad deploy" retryable=false x=null`, formatDetail(detail))
	require.Equal(t, "-", formatDetail(nil))
}

func TestDurationText(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		30 * time.Second: "30s", time.Hour: "1h", 90 * time.Minute: "1h30m", 7 * 24 * time.Hour: "7d",
		36 * time.Hour: "36h", 10 * time.Millisecond: "10ms", 0: "0s", time.Hour + time.Second: "1h0m1s",
	} {
		require.Equal(t, want, durationText(d), d)
	}
}

func TestCodeExit(t *testing.T) {
	t.Parallel()
	for code, want := range map[codes.Code]int{
		codes.NotFound: exitNotFound, codes.FailedPrecondition: exitRefused, codes.Aborted: exitRefused,
		codes.AlreadyExists: exitRefused, codes.Unavailable: exitUnavailable, codes.DeadlineExceeded: exitUnavailable,
		codes.ResourceExhausted: exitUnavailable, codes.InvalidArgument: exitInvalid,
		codes.Unauthenticated: exitNotAllowed, codes.PermissionDenied: exitNotAllowed,
		codes.Internal: exitInternal, codes.Unimplemented: exitInternal, codes.Unknown: exitInternal,
	} {
		require.Equal(t, want, codeExit(code), code.String())
	}
	require.Equal(t, "FAILED_PRECONDITION", codeName(codes.FailedPrecondition))
	require.Equal(t, "UNIMPLEMENTED", codeName(codes.Unimplemented))
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	parse := func(args ...string) ([]string, bool, string) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		history := fs.Bool("history", false, "")
		reason := fs.String("reason", "", "")
		positional, err := parseInterspersed(fs, args)
		require.NoError(t, err)
		return positional, *history, *reason
	}
	positional, history, reason := parse("ns", "--history", "key", "--reason", "why not")
	require.Equal(t, []string{"ns", "key"}, positional)
	require.True(t, history)
	require.Equal(t, "why not", reason)

	positional, history, _ = parse("ns", "--", "-key", "--history")
	require.Equal(t, []string{"ns", "-key", "--history"}, positional)
	require.False(t, history)
}

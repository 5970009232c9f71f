package gotest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func TestErrors(t *testing.T) {
	noLeaks(t)

	t.Run("a different fingerprint for the same key is ErrFingerprintMismatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Do(t.Context(), namespace, "k", value("receipt"), ledgerclient.WithFingerprint([]byte("sha256:aaaa")))
		require.NoError(t, err)

		_, err = b.client.Do(t.Context(), namespace, "k", mustNotRun(t), ledgerclient.WithFingerprint([]byte("sha256:bbbb")))
		require.ErrorIs(t, err, ledgerclient.ErrFingerprintMismatch)
		require.NotErrorIs(t, err, ledgerclient.ErrInvalidArgument)
		require.Equal(t, "FINGERPRINT_MISMATCH", ledgerclient.Reason(err))
		require.Equal(t, codes.FailedPrecondition, status.Code(err))
	})

	t.Run("bad input is ErrInvalidArgument naming the field", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tests := []struct {
			name      string
			namespace string
			key       string
			opts      []ledgerclient.DoOption
			field     string
		}{
			{name: "empty key", namespace: namespace, key: "", field: "key"},
			{name: "key too long", namespace: namespace, key: strings.Repeat("k", 513), field: "key"},
			{name: "bad namespace", namespace: "-billing", key: "k", field: "namespace"},
			{name: "lease too short", namespace: namespace, key: "k", field: "lease_ttl",
				opts: []ledgerclient.DoOption{ledgerclient.WithLeaseTTL(time.Millisecond)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := b.client.Do(t.Context(), tt.namespace, tt.key, mustNotRun(t), tt.opts...)
				require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument)
				var apiErr *ledgerclient.Error
				require.ErrorAs(t, err, &apiErr)
				require.Equal(t, tt.field, apiErr.Field)
				require.Equal(t, "INVALID_ARGUMENT", apiErr.Reason)
				require.Equal(t, codes.InvalidArgument, apiErr.Code())
			})
		}
	})

	t.Run("the typed methods return typed errors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		_, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: namespace, Key: "k"})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)

		reserved, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "k", Owner: "worker-a"})
		require.NoError(t, err)
		token := reserved.GetAcquired().GetFencingToken()
		require.Equal(t, int64(1), token)

		_, err = b.client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: namespace, Key: "k", FencingToken: token + 1})
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
		require.Equal(t, codes.Aborted, status.Code(err))

		_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: namespace, Key: "k", FencingToken: token, Result: []byte("a")})
		require.NoError(t, err)
		again, err := b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: namespace, Key: "k", FencingToken: token, Result: []byte("a")})
		require.NoError(t, err, "a repeated Complete succeeds")
		require.True(t, again.GetAlreadyCompleted())
		_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: namespace, Key: "k", FencingToken: token, Result: []byte("b")})
		require.ErrorIs(t, err, ledgerclient.ErrResultConflict)

		_, err = b.client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: namespace, Key: "k", FencingToken: token})
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
		_, err = b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: namespace, Key: "k", FencingToken: token,
			Error: &ledgerv1.WorkError{Message: "late"}, Retryable: true})
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)

		found, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: namespace, Key: "k"})
		require.NoError(t, err)
		require.Equal(t, ledgerv1.State_STATE_COMPLETED, found.GetEntry().GetState())
		require.Equal(t, []byte("a"), found.GetEntry().GetResult())
	})

	t.Run("the lease helpers need Do's context", func(t *testing.T) {
		t.Parallel()
		_, ok := ledgerclient.LeaseFromContext(context.Background())
		require.False(t, ok)
		require.ErrorIs(t, ledgerclient.SetCheckpoint(context.Background(), []byte("x")), ledgerclient.ErrNoLease)
	})

	t.Run("the reasons on the wire are the names of ErrorReason, and each has a sentinel", func(t *testing.T) {
		t.Parallel()
		// The wire strings, pinned: clients in the field compare them.
		names := make([]string, len(ledgerv1.ErrorReason_name))
		for number, name := range ledgerv1.ErrorReason_name {
			names[number] = name
		}
		require.Equal(t, []string{"ERROR_REASON_UNSPECIFIED", "INVALID_ARGUMENT", "FINGERPRINT_MISMATCH", "LEASE_LOST",
			"RESULT_CONFLICT", "NOT_FOUND", "NOT_LEASED", "ALREADY_EXISTS", "UNAUTHENTICATED", "PERMISSION_DENIED",
			"RATE_LIMITED", "QUOTA_EXCEEDED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELED", "INTERNAL",
			"RESPONSE_TOO_LARGE"}, names)

		sentinels := []error{ledgerclient.ErrInvalidArgument, ledgerclient.ErrFingerprintMismatch, ledgerclient.ErrLeaseLost,
			ledgerclient.ErrResultConflict, ledgerclient.ErrNotFound, ledgerclient.ErrNotLeased, ledgerclient.ErrAlreadyExists,
			ledgerclient.ErrUnauthenticated, ledgerclient.ErrPermissionDenied, ledgerclient.ErrResourceExhausted,
			ledgerclient.ErrQuotaExceeded, ledgerclient.ErrUnavailable, ledgerclient.ErrDeadlineExceeded,
			ledgerclient.ErrCanceled, ledgerclient.ErrInternal}
		for _, name := range names {
			switch name {
			case ledgerv1.ErrorReason_ERROR_REASON_UNSPECIFIED.String():
				continue // never sent
			case ledgerv1.ErrorReason_RESPONSE_TOO_LARGE.String():
				continue // a batch item's only: DoBatch asks for the key again
			}
			err := ledgerclient.ItemErr(&ledgerv1.ItemError{Code: int32(codes.Unknown), Reason: name, Message: "m"})
			var matched []error
			for _, sentinel := range sentinels {
				if errors.Is(err, sentinel) {
					matched = append(matched, sentinel)
				}
			}
			require.Len(t, matched, 1, "%s matches one sentinel", name)
			require.Equal(t, name, ledgerclient.Reason(err))
		}
	})

	t.Run("Reason and Permanent handle errors that are not ledgerd's", func(t *testing.T) {
		t.Parallel()
		require.Empty(t, ledgerclient.Reason(nil))
		require.Empty(t, ledgerclient.Reason(errors.New("not from ledgerd")))
		require.NoError(t, ledgerclient.Permanent(nil))
	})
}

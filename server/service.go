package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// service adapts ledger.Store to ledgerv1.LedgerServiceServer: proto in,
// domain call, proto out, and every error through toStatus.
type service struct {
	ledgerv1.UnimplementedLedgerServiceServer
	store  *ledger.Store
	logger *slog.Logger
	// maxResponseBytes is the gRPC send limit, which a batch's response
	// must stay under.
	maxResponseBytes int
	// waits caps the Reserves that wait, per principal.
	waits   *waitSlots
	metrics *Metrics // nil: nothing recorded
}

func (s *service) Reserve(ctx context.Context, req *ledgerv1.ReserveRequest) (*ledgerv1.ReserveResponse, error) {
	ttl, err := duration("lease_ttl", req.GetLeaseTtl())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	wait, err := duration("wait_timeout", req.GetWaitTimeout())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	if wait > 0 {
		// A principal holding all its waiting slots is answered at once,
		// as with wait_timeout 0 (IN_PROGRESS with a retry_after that
		// clients already follow), rather than refused: its pipeline
		// slows to polling, and no other principal's waits are affected.
		principal, ok := principalFrom(ctx)
		if !ok {
			principal = "anonymous"
		}
		if s.waits.take(principal) {
			defer s.waits.give(principal)
		} else {
			wait = 0
			s.metrics.waitDeclined()
		}
	}
	r, err := s.store.Reserve(ctx, ledger.ReserveRequest{
		Namespace:   req.GetNamespace(),
		Key:         req.GetKey(),
		Owner:       req.GetOwner(),
		LeaseTTL:    ttl,
		Fingerprint: req.GetFingerprint(),
		Metadata:    req.GetMetadata(),
		WaitTimeout: wait,
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return reserveResponse(r), nil
}

func reserveResponse(r ledger.Reservation) *ledgerv1.ReserveResponse {
	switch r.Outcome {
	case ledger.Acquired:
		return &ledgerv1.ReserveResponse{Outcome: &ledgerv1.ReserveResponse_Acquired{Acquired: &ledgerv1.Acquired{
			FencingToken:   r.FencingToken,
			LeaseExpiresAt: timestamppb.New(r.LeaseExpiresAt),
			LeaseTtl:       durationpb.New(r.LeaseTTL),
			Attempt:        int32(r.Attempt),
			Takeover:       r.Takeover,
			PreviousOwner:  r.PreviousOwner,
			Checkpoint:     r.Checkpoint,
		}}}
	case ledger.Completed:
		return &ledgerv1.ReserveResponse{Outcome: &ledgerv1.ReserveResponse_Completed{Completed: &ledgerv1.Completed{
			Result:       r.Result,
			CompletedAt:  timestamppb.New(r.FinishedAt),
			FencingToken: r.FencingToken,
			Owner:        r.Owner,
		}}}
	case ledger.InProgress:
		return &ledgerv1.ReserveResponse{Outcome: &ledgerv1.ReserveResponse_InProgress{InProgress: &ledgerv1.InProgress{
			Owner:          r.Owner,
			LeaseExpiresAt: timestamppb.New(r.LeaseExpiresAt),
			RetryAfter:     durationpb.New(r.RetryAfter),
			Attempt:        int32(r.Attempt),
		}}}
	case ledger.Failed:
		return &ledgerv1.ReserveResponse{Outcome: &ledgerv1.ReserveResponse_Failed{Failed: &ledgerv1.Failed{
			Error:        workErrorProto(r.Error),
			FailedAt:     timestamppb.New(r.FinishedAt),
			FencingToken: r.FencingToken,
			Attempts:     int32(r.Attempt),
		}}}
	}
	panic("server: reservation without an outcome") // the store always sets one
}

func (s *service) Heartbeat(ctx context.Context, req *ledgerv1.HeartbeatRequest) (*ledgerv1.HeartbeatResponse, error) {
	ttl, err := duration("lease_ttl", req.GetLeaseTtl())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	expiresAt, err := s.store.Heartbeat(ctx, ledger.HeartbeatRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		FencingToken: req.GetFencingToken(),
		LeaseTTL:     ttl,
		Checkpoint:   checkpoint(req),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.HeartbeatResponse{LeaseExpiresAt: timestamppb.New(expiresAt)}, nil
}

// checkpoint keeps the difference between an unset checkpoint (keep the
// stored one: nil) and a set, empty one (clear it: non-nil and empty).
func checkpoint(req *ledgerv1.HeartbeatRequest) []byte {
	if req.Checkpoint == nil {
		return nil
	}
	if len(req.Checkpoint) == 0 {
		return []byte{}
	}
	return req.Checkpoint
}

func (s *service) Complete(ctx context.Context, req *ledgerv1.CompleteRequest) (*ledgerv1.CompleteResponse, error) {
	c, err := s.store.Complete(ctx, ledger.CompleteRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		FencingToken: req.GetFencingToken(),
		Result:       req.GetResult(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return completeResponse(c), nil
}

func completeResponse(c ledger.Completion) *ledgerv1.CompleteResponse {
	return &ledgerv1.CompleteResponse{
		CompletedAt:      timestamppb.New(c.CompletedAt),
		AlreadyCompleted: c.AlreadyCompleted,
	}
}

func (s *service) Fail(ctx context.Context, req *ledgerv1.FailRequest) (*ledgerv1.FailResponse, error) {
	var workErr *ledger.WorkError
	if e := req.GetError(); e != nil {
		workErr = &ledger.WorkError{Code: e.GetCode(), Message: e.GetMessage()}
	}
	f, err := s.store.Fail(ctx, ledger.FailRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		FencingToken: req.GetFencingToken(),
		Error:        workErr,
		Retryable:    req.GetRetryable(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.FailResponse{State: states.api(f.State), AlreadyFailed: f.AlreadyFailed}, nil
}

func (s *service) Release(ctx context.Context, req *ledgerv1.ReleaseRequest) (*ledgerv1.ReleaseResponse, error) {
	already, err := s.store.Release(ctx, ledger.ReleaseRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		FencingToken: req.GetFencingToken(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.ReleaseResponse{AlreadyReleased: already}, nil
}

func (s *service) Lookup(ctx context.Context, req *ledgerv1.LookupRequest) (*ledgerv1.LookupResponse, error) {
	e, err := s.store.Lookup(ctx, req.GetNamespace(), req.GetKey())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	response := &ledgerv1.LookupResponse{Entry: entryProto(e)}
	if req.GetIncludeHistory() {
		// On the primary, as the entry: a worker reads its own writes.
		events, next, err := s.store.GetHistory(ledger.WithPrimaryReads(ctx), req.GetNamespace(), req.GetKey(), ledger.Page{})
		if err != nil {
			return nil, toStatus(ctx, s.logger, err)
		}
		response.History = eventsProto(events)
		response.HistoryTruncated = next != ""
	}
	return response, nil
}

func entryProto(e ledger.Entry) *ledgerv1.Entry {
	return &ledgerv1.Entry{
		Namespace:      e.Namespace,
		Key:            e.Key,
		State:          states.api(e.State),
		Owner:          e.Owner,
		FencingToken:   e.FencingToken,
		LeaseExpiresAt: optionalTimestamp(e.LeaseExpiresAt),
		LeaseExpired:   e.LeaseExpired,
		Attempts:       int32(e.Attempts),
		Fingerprint:    e.Fingerprint,
		Result:         e.Result,
		Error:          workErrorProto(e.Error),
		Checkpoint:     e.Checkpoint,
		Metadata:       e.Metadata,
		CreatedAt:      optionalTimestamp(e.CreatedAt),
		UpdatedAt:      optionalTimestamp(e.UpdatedAt),
		FinishedAt:     optionalTimestamp(e.FinishedAt),
		ExpiresAt:      optionalTimestamp(e.ExpiresAt),
		PurgedAt:       optionalTimestamp(e.PurgedAt),
	}
}

// duration converts an optional proto duration; unset is zero.
func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, &ledger.ValidationError{Field: field, Reason: "must be a valid duration within ±10000 years"}
	}
	return d.AsDuration(), nil
}

func optionalTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func workErrorProto(e *ledger.WorkError) *ledgerv1.WorkError {
	if e == nil {
		return nil
	}
	return &ledgerv1.WorkError{Code: e.Code, Message: e.Message}
}

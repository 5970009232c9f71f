package server

import (
	"context"
	"fmt"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// ReasonResponseTooLarge is the ItemError reason of a batch item whose
// answer did not fit in the response: the caller asks for that key again.
var ReasonResponseTooLarge = ledgerv1.ErrorReason_RESPONSE_TOO_LARGE.String()

func (s *service) ReserveBatch(ctx context.Context, req *ledgerv1.ReserveBatchRequest) (*ledgerv1.ReserveBatchResponse, error) {
	ttl, err := duration("lease_ttl", req.GetLeaseTtl())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	items := make([]ledger.ReserveBatchItem, len(req.GetItems()))
	for i, item := range req.GetItems() {
		items[i] = ledger.ReserveBatchItem{Key: item.GetKey(), Fingerprint: item.GetFingerprint(), Metadata: item.GetMetadata()}
	}
	results, err := s.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{
		Namespace: req.GetNamespace(), Owner: req.GetOwner(), LeaseTTL: ttl, Items: items,
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	budget := s.newBudget()
	resp := &ledgerv1.ReserveBatchResponse{Results: make([]*ledgerv1.ReserveBatchResult, len(results))}
	for i, r := range results {
		result := &ledgerv1.ReserveBatchResult{}
		if r.Err != nil {
			result.Result = &ledgerv1.ReserveBatchResult_Error{Error: itemError(ctx, s.logger, r.Err)}
		} else {
			result.Result = &ledgerv1.ReserveBatchResult_Reserved{Reserved: reserveResponse(r.Reservation)}
		}
		if !budget.take(result) {
			result.Result = &ledgerv1.ReserveBatchResult_Error{Error: tooLarge(i,
				"if it was granted, the lease is the owner's: Reserve the key again (alone) to get the same fencing token")}
			budget.take(result)
		}
		resp.Results[i] = result
	}
	return resp, nil
}

func (s *service) CompleteBatch(ctx context.Context, req *ledgerv1.CompleteBatchRequest) (*ledgerv1.CompleteBatchResponse, error) {
	items := make([]ledger.CompleteBatchItem, len(req.GetItems()))
	for i, item := range req.GetItems() {
		items[i] = ledger.CompleteBatchItem{Key: item.GetKey(), FencingToken: item.GetFencingToken(), Result: item.GetResult()}
	}
	results, err := s.store.CompleteBatch(ctx, req.GetNamespace(), items)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	resp := &ledgerv1.CompleteBatchResponse{Results: make([]*ledgerv1.CompleteBatchResult, len(results))}
	for i, r := range results {
		if r.Err != nil {
			resp.Results[i] = &ledgerv1.CompleteBatchResult{Result: &ledgerv1.CompleteBatchResult_Error{Error: itemError(ctx, s.logger, r.Err)}}
			continue
		}
		resp.Results[i] = &ledgerv1.CompleteBatchResult{Result: &ledgerv1.CompleteBatchResult_Completed{Completed: completeResponse(r.Completion)}}
	}
	return resp, nil
}

func (s *service) LookupBatch(ctx context.Context, req *ledgerv1.LookupBatchRequest) (*ledgerv1.LookupBatchResponse, error) {
	results, err := s.store.LookupBatch(ctx, req.GetNamespace(), req.GetKeys())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	budget := s.newBudget()
	resp := &ledgerv1.LookupBatchResponse{Results: make([]*ledgerv1.LookupBatchResult, len(results))}
	for i, r := range results {
		result := &ledgerv1.LookupBatchResult{}
		if r.Err != nil {
			result.Result = &ledgerv1.LookupBatchResult_Error{Error: itemError(ctx, s.logger, r.Err)}
		} else {
			result.Result = &ledgerv1.LookupBatchResult_Entry{Entry: entryProto(r.Entry)}
		}
		if !budget.take(result) {
			result.Result = &ledgerv1.LookupBatchResult_Error{Error: tooLarge(i, "look the key up again (alone)")}
			budget.take(result)
		}
		resp.Results[i] = result
	}
	return resp, nil
}

// responseBudget keeps a batch's response under the gRPC send limit.
type responseBudget struct{ left int }

// batchResponseSlack is kept free of items in a batch response: the
// envelope, and the encoding of the items' own lengths.
const batchResponseSlack = 64 << 10

func (s *service) newBudget() *responseBudget {
	return &responseBudget{left: s.maxResponseBytes - batchResponseSlack}
}

// take counts an item's encoded size, and reports whether it fits.
func (b *responseBudget) take(item proto.Message) bool {
	size := proto.Size(item) + 8 // with its tag and length
	if size > b.left {
		return false
	}
	b.left -= size
	return true
}

func tooLarge(i int, what string) *ledgerv1.ItemError {
	return &ledgerv1.ItemError{
		Code:    int32(codes.ResourceExhausted),
		Reason:  ReasonResponseTooLarge,
		Message: fmt.Sprintf("items[%d]: the batch's response has no room left for this answer; %s", i, what),
	}
}

// itemError is the ItemError of a batch item: the gRPC status that the
// singleton call would have returned (see toStatus), flattened.
func itemError(ctx context.Context, logger *slog.Logger, err error) *ledgerv1.ItemError {
	st, ok := status.FromError(toStatus(ctx, logger, err))
	if !ok {
		return &ledgerv1.ItemError{Code: int32(codes.Internal), Reason: ReasonInternal, Message: "internal error"}
	}
	out := &ledgerv1.ItemError{Code: int32(st.Code()), Message: st.Message()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Metadata = d.GetReason(), d.GetMetadata()
		case *errdetails.BadRequest:
			if violations := d.GetFieldViolations(); len(violations) > 0 {
				out.Field = violations[0].GetField()
			}
		}
	}
	delete(out.Metadata, "field") // it is out.Field
	return out
}

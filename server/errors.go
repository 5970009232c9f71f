package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every ledgerd error.
const ErrorDomain = "ledgerd"

// The google.rpc.ErrorInfo reasons ledgerd returns. Clients in every language
// branch on these strings; they are part of the API (see error_reason.proto).
var (
	ReasonInvalidArgument     = ledgerv1.ErrorReason_INVALID_ARGUMENT.String()
	ReasonFingerprintMismatch = ledgerv1.ErrorReason_FINGERPRINT_MISMATCH.String()
	ReasonLeaseLost           = ledgerv1.ErrorReason_LEASE_LOST.String()
	ReasonResultConflict      = ledgerv1.ErrorReason_RESULT_CONFLICT.String()
	ReasonNotFound            = ledgerv1.ErrorReason_NOT_FOUND.String()
	ReasonNotLeased           = ledgerv1.ErrorReason_NOT_LEASED.String()
	ReasonAlreadyExists       = ledgerv1.ErrorReason_ALREADY_EXISTS.String()
	ReasonUnauthenticated     = ledgerv1.ErrorReason_UNAUTHENTICATED.String()
	ReasonPermissionDenied    = ledgerv1.ErrorReason_PERMISSION_DENIED.String()
	ReasonQuotaExceeded       = ledgerv1.ErrorReason_QUOTA_EXCEEDED.String()
	ReasonUnavailable         = ledgerv1.ErrorReason_UNAVAILABLE.String()
	ReasonDeadlineExceeded    = ledgerv1.ErrorReason_DEADLINE_EXCEEDED.String()
	ReasonCanceled            = ledgerv1.ErrorReason_CANCELED.String()
	ReasonInternal            = ledgerv1.ErrorReason_INTERNAL.String()
)

// toStatus is the one place where ledger errors become gRPC statuses. Each
// carries an ErrorInfo with a reason; invalid arguments also carry a
// BadRequest naming the field. Messages never carry internals (SQL, driver
// or panic text): those are logged here instead.
func toStatus(ctx context.Context, logger *slog.Logger, err error) error {
	var validation *ledger.ValidationError
	var quota *ledger.QuotaError
	switch {
	case errors.As(err, &validation):
		return validationStatus(validation)
	case errors.As(err, &quota):
		return quotaStatus(quota)
	case errors.Is(err, ledger.ErrFingerprintMismatch):
		return withDetails(codes.FailedPrecondition, ReasonFingerprintMismatch, err.Error(), nil)
	case errors.Is(err, ledger.ErrLeaseLost):
		return withDetails(codes.Aborted, ReasonLeaseLost, err.Error(), nil)
	case errors.Is(err, ledger.ErrResultConflict):
		return withDetails(codes.FailedPrecondition, ReasonResultConflict, err.Error(), nil)
	case errors.Is(err, ledger.ErrNotFound):
		return withDetails(codes.NotFound, ReasonNotFound, err.Error(), nil)
	case errors.Is(err, ledger.ErrNotLeased):
		return withDetails(codes.FailedPrecondition, ReasonNotLeased, err.Error(), nil)
	case errors.Is(err, ledger.ErrAlreadyExists):
		return withDetails(codes.AlreadyExists, ReasonAlreadyExists, err.Error(), nil)
	case errors.Is(err, ledger.ErrUnavailable):
		logger.WarnContext(ctx, "database unavailable", "error", err)
		return withDetails(codes.Unavailable, ReasonUnavailable, "the ledger database is unavailable; retry with backoff", nil)
	case errors.Is(err, context.DeadlineExceeded):
		return withDetails(codes.DeadlineExceeded, ReasonDeadlineExceeded, "the request deadline was exceeded; its effect is unknown, retry", nil)
	case errors.Is(err, context.Canceled):
		return withDetails(codes.Canceled, ReasonCanceled, "the request was canceled", nil)
	default:
		logger.ErrorContext(ctx, "internal error", "error", err)
		return withDetails(codes.Internal, ReasonInternal, "internal error", nil)
	}
}

// validationStatus is INVALID_ARGUMENT for a field that broke a limit or a
// format, with a BadRequest naming it.
func validationStatus(validation *ledger.ValidationError) error {
	return withDetails(codes.InvalidArgument, ReasonInvalidArgument, validation.Error(),
		map[string]string{"field": validation.Field},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field:       validation.Field,
			Description: validation.Reason,
		}}})
}

// heldLeasesRetryDelay is the RetryInfo of a grant refused by a held-leases
// quota: places free up as the namespace's workers finish, so a client may
// wait and ask again. A stored-bytes quota frees up only with retention or
// an admin's action: no RetryInfo.
const heldLeasesRetryDelay = time.Second

func quotaStatus(quota *ledger.QuotaError) error {
	metadata := map[string]string{
		"namespace": quota.Namespace,
		"quota":     quota.Quota,
		"limit":     strconv.FormatInt(quota.Limit, 10),
		"usage":     strconv.FormatInt(quota.Usage, 10),
	}
	if quota.Pattern != "" {
		metadata["pattern"] = quota.Pattern
	}
	if quota.Quota == ledger.QuotaHeldLeases {
		return withDetails(codes.ResourceExhausted, ReasonQuotaExceeded, quota.Error(), metadata,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(heldLeasesRetryDelay)})
	}
	return withDetails(codes.ResourceExhausted, ReasonQuotaExceeded, quota.Error(), metadata)
}

func withDetails(code codes.Code, reason, message string, metadata map[string]string, extra ...protoadapt.MessageV1) error {
	st := status.New(code, message)
	details := append([]protoadapt.MessageV1{
		&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: metadata},
	}, extra...)
	withInfo, err := st.WithDetails(details...)
	if err != nil {
		return st.Err() // WithDetails fails only for an OK status: keep code and message
	}
	return withInfo.Err()
}
